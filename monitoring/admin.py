from monitoring import (
    admin_alerts,  # noqa: F401
    admin_health,  # noqa: F401,E402
)
