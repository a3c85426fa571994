"""The outbound queue: durable storage with leases (store.py) and its management (manage.py)."""
