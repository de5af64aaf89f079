from monitoring import admin_health  # noqa: F401 - registers the health screens
