"""Static files in production: hashed names, compressed copies, long cache lifetimes.

``collectstatic`` (with ``DEBUG=0``) writes every file under a content-hashed
name next to a manifest; pages then link the hashed names, which ServeStatic's
middleware answers with ``Cache-Control: max-age=315360000, immutable``, so a
browser fetches a file once per version. Until ``collectstatic`` has run, pages
link the plain names and ``agency.views.static_file`` serves them from the
apps, revalidated on every load: a deployment that skipped the step still works.
"""

from __future__ import annotations

from servestatic.storage import CompressedManifestStaticFilesStorage


class HashedStaticFiles(CompressedManifestStaticFilesStorage):
    """Manifest storage that links plain names while no manifest exists (never a 500)."""

    # Rewrite `import ... from "./x.js"` in ES modules to the hashed names too.
    support_js_module_import_aggregation = True

    def stored_name(self, name: str) -> str:
        if not self.hashed_files:
            return name
        return super().stored_name(name)
