"""The registry resource of the REST API (``/v2/organizations/{org}/clusters/{id}/registry``):
``views.py``, ``serializers.py`` and ``urls.py``, the same shape as ``clusters/api/``."""
