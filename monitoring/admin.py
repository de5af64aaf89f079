from monitoring import (
    admin_health,  # noqa: F401 - registers the health screens
    admin_jobs,  # noqa: F401 - registers the job monitors' screen
    admin_services,  # noqa: F401 - registers the services' screen (sources and SLOs inline)
)
