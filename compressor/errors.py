"""Errors a user caused: the CLI prints the message on one line and exits 2."""


class InputError(Exception):
    """Bad input: a missing folder, an unknown method, a ratio out of range, ..."""


class ParityError(Exception):
    """The exported graph disagrees with the PyTorch model it came from."""
