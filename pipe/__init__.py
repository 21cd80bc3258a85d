"""The OpenWebUI Pipe Function (``letta_pipe.py``, pasted as one file) and a demo driver."""
