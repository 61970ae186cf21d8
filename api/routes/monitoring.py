"""The monitoring endpoints (Unilingo v1's set), thin: the figures come from ``api.monitoring``.

* ``GET /api/ai/status`` (any user): OpenAI's policy in force (limits, revision), budget left
  in the rolling minute, calls in flight, breaker, pause, deferred jobs, the ``ai`` queue.
* ``GET /api/pronunciation/status`` (any user): the same for Azure Speech and the ``speech`` queue.
* ``GET /api/metrics`` (admin): a JSON summary: requests (total, error rate, response times),
  jobs, per-service figures, breakers, queues, quota rejections, cache.
* ``GET /api/admin/users/overview`` (admin): users tracked and active, activity totals, risk
  levels, top users.
* ``GET /api/admin/users/statistics`` (admin): activity and risk score per user
  (``?sort=risk|activity|recent``, ``?limit=``, ``?user_id=``).
* ``GET /monitoring`` (admin): an HTML page (``api/templates``, ``api/static``) that refreshes
  itself every 5 s from ``GET /monitoring/data``.

Admin endpoints need a token with the admin role (``403 forbidden`` otherwise, ``401`` without
a valid token) and, when ``ADMIN_IP_ALLOWLIST`` lists networks, an allowed client address
(``403 ip_not_allowed``): ``api.deps.require_admin``, for the ``/api/`` routes through
``admin_guard`` (which takes the caller's read quota too) and for the page here.

``/monitoring`` in a browser: a browser cannot send an ``Authorization`` header when it opens
a page, so the page also accepts the token once, by ``GET /monitoring?token=<jwt>`` or by the
sign-in form (``POST /monitoring``); it answers with a redirect to ``/monitoring`` that sets
the token as an ``HttpOnly``, ``SameSite=Strict`` cookie scoped to ``/monitoring`` (so the
token leaves the address bar and history at once, and no script can read it), valid until the
token expires (8 h at most). ``Authorization: Bearer`` works too. The page and its data take
no quota: it polls every 5 s. The sign-in and sign-out forms are refused (``403``) when the
browser says they were sent from another site (``Origin`` not this host, or
``Sec-Fetch-Site: cross-site``): no other page can sign an admin in as someone else (login
CSRF) or out. The page's script and style are files served by the API (``/monitoring/static``)
under a Content-Security-Policy that allows nothing else.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse, RedirectResponse, Response

from api import monitoring
from api import monitoring_schemas as ms
from api.deps import Caller, Services, admin_guard, bearer_token, read_guard, require_admin
from api.errors import ApiError
from api.responses import JSON
from api.security import Principal

router = APIRouter(tags=["monitoring"])

COOKIE = "unilingo_monitoring"
COOKIE_MAX_SECONDS = 8 * 3600
REFRESH_SECONDS = 5
STATIC = Path(__file__).resolve().parent.parent / "static"
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")


@router.get("/api/metrics", response_model=ms.PlatformSummary, summary="JSON summary of the platform (admin)")
async def metrics_summary(caller: Caller = Depends(admin_guard)) -> JSON:
    return JSON(await monitoring.platform_summary(caller.services))


@router.get(
    "/api/ai/status",
    response_model=ms.ProviderStatus,
    summary="OpenAI: the policy in force, budget left, breaker, queue",
)
async def ai_status(caller: Caller = Depends(read_guard)) -> JSON:
    return JSON(await monitoring.provider_status_of(caller.services, "ai"))


@router.get(
    "/api/pronunciation/status",
    response_model=ms.ProviderStatus,
    summary="Azure Speech: the policy in force, budget left, breaker, queue",
)
async def pronunciation_status(caller: Caller = Depends(read_guard)) -> JSON:
    return JSON(await monitoring.provider_status_of(caller.services, "pronunciation"))


@router.get(
    "/api/admin/users/overview",
    response_model=ms.UsersOverview,
    summary="User activity overview and risk levels (admin)",
)
async def users_overview(caller: Caller = Depends(admin_guard)) -> JSON:
    return JSON(monitoring.overview(await monitoring.read_users(caller.services), time.time()))


@router.get(
    "/api/admin/users/statistics", response_model=ms.UsersStatistics, summary="Activity and risk score per user (admin)"
)
async def users_statistics(
    caller: Caller = Depends(admin_guard),
    sort: str = Query("risk", pattern="^(risk|activity|recent)$"),
    limit: int = Query(50, ge=1, le=1000),
    user_id: str | None = Query(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@|+\-]+$"),
) -> JSON:
    records = await monitoring.read_users(caller.services, user_id)
    if user_id is not None and not records:
        raise ApiError(404, "not_found", "no recent activity is recorded for this user")
    return JSON(monitoring.statistics(records, sort, limit))


# ---------------------------------------------------------------------------------------------
# /monitoring: the HTML page
# ---------------------------------------------------------------------------------------------


def _page_token(request: Request) -> str | None:
    return bearer_token(request) or request.cookies.get(COOKIE)


def _set_cookie(response: Response, request: Request, token: str, user: Principal) -> None:
    exp = user.claims.get("exp")
    max_age = COOKIE_MAX_SECONDS
    if isinstance(exp, (int, float)):
        max_age = max(1, min(max_age, int(exp - time.time())))
    response.set_cookie(
        COOKIE,
        token,
        max_age=max_age,
        path="/monitoring",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https",
    )


PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _html(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context, status_code=status, headers=PAGE_HEADERS)


async def _require_admin(request: Request, token: str | None) -> tuple[Principal, Services]:
    """The page's admin: its token from the cookie or the header, no quota (it polls)."""
    svc: Services = request.app.state.services.bind()
    user = await request.app.state.verifier.verify(token)
    request.state.user = user
    require_admin(request, svc, user)
    return user, svc


async def _page_admin(request: Request, token: str | None) -> Principal | Response:
    """The admin behind ``token``, or the page to answer instead (sign-in or refusal)."""
    try:
        user, _ = await _require_admin(request, token)
    except ApiError as exc:
        if exc.status_code == 401:
            return _html(request, "sign_in.html", status=401, message=exc.message)
        if exc.status_code in (403,):
            return _html(request, "refused.html", status=403, message=exc.message)
        raise
    return user


@router.get(
    "/monitoring", include_in_schema=True, summary="Live monitoring page (admin; HTML)", response_class=HTMLResponse
)
async def monitoring_page(request: Request, token: str | None = Query(None, max_length=8192)) -> Response:
    if token:  # a token in the address: remember it in a cookie and take it out of the address
        user = await _page_admin(request, token)
        if isinstance(user, Response):
            return user
        response = RedirectResponse("/monitoring", status_code=303, headers={"Cache-Control": "no-store"})
        _set_cookie(response, request, token, user)
        return response
    user = await _page_admin(request, _page_token(request))
    if isinstance(user, Response):
        return user
    return _html(request, "monitoring.html", user_id=user.user_id, refresh_seconds=REFRESH_SECONDS)


def _cross_site(request: Request) -> bool:
    """True when the browser says this form was sent from another site.

    Browsers send ``Origin`` with every form POST and ``Sec-Fetch-Site`` on every request; a
    client that sends neither is not a browser, and carries no ambient cookie to abuse."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False
    own = {request.headers.get("host", "").lower()}
    public = request.app.state.settings.public_base_url
    if public:
        own.add(urlsplit(public).netloc.lower())
    return origin == "null" or urlsplit(origin).netloc.lower() not in own


def _cross_site_refusal(request: Request) -> Response:
    message = "this form was sent from another site; open /monitoring itself to sign in or out"
    return _html(request, "refused.html", status=403, message=message)


@router.post("/monitoring", include_in_schema=False)
async def monitoring_sign_in(request: Request) -> Response:
    if _cross_site(request):
        return _cross_site_refusal(request)
    form = await request.form()
    token = str(form.get("token") or "").strip()
    user = await _page_admin(request, token or None)
    if isinstance(user, Response):
        return user
    response = RedirectResponse("/monitoring", status_code=303, headers={"Cache-Control": "no-store"})
    _set_cookie(response, request, token, user)
    return response


@router.get("/monitoring/data", summary="The figures /monitoring shows (admin; cookie or bearer token)")
async def monitoring_data(request: Request) -> JSON:
    _, svc = await _require_admin(request, _page_token(request))
    data = await monitoring.platform_summary(svc)
    data["users"] = monitoring.overview(await monitoring.read_users(svc), time.time())
    return JSON(data, headers={"Cache-Control": "no-store"})


@router.post("/monitoring/sign-out", include_in_schema=False)
async def monitoring_sign_out(request: Request) -> Response:
    if _cross_site(request):
        return _cross_site_refusal(request)
    response = RedirectResponse("/monitoring", status_code=303)
    response.delete_cookie(COOKIE, path="/monitoring")
    return response
