"""How models train: the numpy learners and their kernels, the torch learner and its fused fast
loop. Not models themselves: registry discovery (`pipeline.models.registry`) never imports this
package, so torch is only imported when a torch trial builds its learner."""
