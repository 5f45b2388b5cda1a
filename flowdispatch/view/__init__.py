"""Showing a run: drawings (``render``), the live graph (``live``) and the
progress bar (``progress``). They learn about a run only through callbacks and
:class:`~flowdispatch.Results`."""
