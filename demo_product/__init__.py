"""A small stand-in for WingmanMatch's backend that ``make run`` starts beside the control plane (development only).

It serves ``/api/health`` and ``/metrics`` under prometheus-fastapi-instrumentator's names, makes its own
steady traffic, behaves as the version the demo pipeline last deployed, and asks the control plane for
``matching_v2_algorithm`` over OFREP. Stdlib and prometheus_client only: no Django, and no app imports it.
"""
