"""siproc: a scriptable SIP softphone that spawns a handler process for every call."""

__version__ = "0.2.0.dev0"
