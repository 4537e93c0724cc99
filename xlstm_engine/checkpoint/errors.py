class CheckpointError(ValueError):
    """A checkpoint folder or file that cannot be used; the message names the file or key."""
