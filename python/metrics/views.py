"""The endpoints: `/metrics/` (exposition) and the three probes.

Every view is exempt from CSRF: none changes state, and CsrfViewMiddleware runs before the view,
so without the exemption a POST would get Django's 403 CSRF page instead of the 405 (with
`Allow: GET, HEAD`) that `require_safe` answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template import Context, Engine, TemplateDoesNotExist
from django.template.loader import render_to_string
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from metrics import core, health
from metrics.access import WWW_AUTHENTICATE, check_request
from metrics.conf import app_settings
from metrics.negotiation import accepts_gzip, negotiate, prefers_html


@csrf_exempt
@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Serve every metric (ours and `prometheus_client.REGISTRY`'s) to allowed callers."""
    if not app_settings.ENABLED:
        raise Http404("Metrics are disabled.")
    decision = check_request(request)
    if not decision.allowed:
        response = HttpResponse(
            "Authentication required.\n" if decision.status == 401 else "Forbidden.\n",
            status=decision.status,
            content_type="text/plain; charset=utf-8",
        )
        if decision.status == 401:
            response["WWW-Authenticate"] = WWW_AUTHENTICATE
        return response
    chosen = negotiate(request.headers.get("Accept", ""))
    gzip = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    # `?name[]=a&name[]=b`: only those samples, as prometheus_client's handlers allow.
    names = request.GET.getlist("name[]") or None
    body = core.exposition(**chosen.encoder_options(), gzip=gzip, names=names)
    response = HttpResponse(body, content_type=chosen.content_type)
    if gzip:
        response["Content-Encoding"] = "gzip"
    patch_vary_headers(response, ("Accept", "Accept-Encoding"))
    return response


@csrf_exempt
@never_cache
@require_safe
def liveness(request: HttpRequest) -> HttpResponse:
    """Answer 200 whenever the process can answer; touch no external dependency."""
    return JsonResponse({"status": health.OK})


@csrf_exempt
@never_cache
@require_safe
def readiness(request: HttpRequest) -> HttpResponse:
    """Check the default database, the default cache and migrations: 200 or 503."""
    report = health.run_checks(health.checks_for(readiness=True))
    return _report_response(request, report, "Readiness")


@csrf_exempt
@never_cache
@require_safe
def health_view(request: HttpRequest) -> HttpResponse:
    """Run every check in parallel; JSON, or HTML for browsers."""
    report = health.run_checks(health.checks_for(readiness=False))
    return _report_response(request, report, "Health")


def _report_response(request: HttpRequest, report: health.Report, title: str) -> HttpResponse:
    # Error messages can reveal host names and versions: only for who may read the metrics, and
    # never on a probe answered for a Host outside ALLOWED_HOSTS (see middleware._probe_view):
    # a DNS-rebound page in a browser on an allowed network must not read them.
    details = check_request(request).allowed and not getattr(request, "metrics_untrusted_host", False)
    data = report.as_dict(details)
    if prefers_html(request.headers.get("Accept", "")):
        response = HttpResponse(
            _render_html({"title": title, "report": data, "details": details}),
            status=report.http_status,
            content_type="text/html; charset=utf-8",
        )
    else:
        response = JsonResponse(data, status=report.http_status)
    patch_vary_headers(response, ("Accept",))
    return response


def _render_html(context: dict[str, Any]) -> str:
    context = {**context, "checks": list(context["report"]["checks"].items())}
    try:
        # Through the site's template engines first, so a site can override the page.
        return render_to_string("metrics/health.html", context)
    except TemplateDoesNotExist:
        # A site without APP_DIRS: render the packaged template on its own.
        engine = Engine(dirs=[str(Path(__file__).parent / "templates")], autoescape=True)
        return engine.get_template("metrics/health.html").render(Context(context, autoescape=True))
