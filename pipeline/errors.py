"""Exceptions a stage may raise on purpose."""


class ConsumerStalled(Exception):
    """The consumer took nothing for longer than the stage's send timeout; the stream is given up."""
