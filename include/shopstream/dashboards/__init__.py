"""Superset dashboards kept as code (``assets/``) and their importer.

``import_dashboards(settings)`` creates or overwrites every asset by UUID; ``summary_lines(settings)``
is what the demo summary prints (URL, login, one link per dashboard).
"""

from shopstream.dashboards.importer import (
    DashboardImportError,
    SupersetClient,
    dashboard_url,
    import_dashboards,
    summary_lines,
)

__all__ = ["DashboardImportError", "SupersetClient", "dashboard_url", "import_dashboards", "summary_lines"]
