"""The one exception type that means "the user gave us something wrong"."""


class UserError(Exception):
    """A problem with the user's input: the CLI prints its message as one line and exits 2.

    The message must name what is wrong (file, key, value) and what is expected.
    """

    def __init__(self, message: str) -> None:
        # Collapse to one line: the CLI contract is a single line on stderr.
        super().__init__(" ".join(str(message).split()))
