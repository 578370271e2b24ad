"""The HTTP API: serves the read model from an in-process cache of orjson bytes.

python -m api                      (settings.api_replicas processes sharing api_port)
python -m api --port P --replicas 1
"""
