"""What the dashboard reads (see :mod:`tuneyard.service.dashboard.views`)."""

from tuneyard.service.dashboard.views import Card, DashboardService, Version, space_items

__all__ = ["Card", "DashboardService", "Version", "space_items"]
