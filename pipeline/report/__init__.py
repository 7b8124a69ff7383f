"""`medgrid report`: tracked runs -> tidy table -> statistics -> tables, figures, CSV/MD/HTML.

`build` drives it (`make_report`); `runs` reads the sweep's trials, `stats` holds the paired
tests and intervals, `tables`/`sampled` shape the tables, `reference` the published numbers,
`notes`/`render`/`plots` the text and figures, `output` where a report may be written.
"""
