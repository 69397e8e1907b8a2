"""The REST face: a plain ASGI app serving TF Serving's REST API and KServe v2 on one port."""

from keepwarm.http.app import HttpApp

__all__ = ["HttpApp"]
