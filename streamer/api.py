"""The HTTP app: subscriptions (seed 001), the data API (seed 000: on-demand, batch) and
session power management (seed 003: set/clear a power limit, actions, webhooks).

Every request needs ``Authorization: Bearer <token>`` of a data subscriber; a
``DataSubscriberId`` header, when sent, must name that subscriber. A subscriber sees only its
own subscriptions (another's is a 404, so ids cannot be probed). ``Itron-CorrelationId`` is
echoed back, or generated when absent, and logged with the request. A request the API cannot
run as sent (a malformed body, a bad date, a range outside the data available) is a 400 whose
``parameter`` names what is wrong; under ``/api/v1`` (seed 003) every answer, errors included,
is the ``{"ok", "message", "result"}`` envelope.
"""

import base64
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import psycopg
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response, status
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.edrv import ActionResponse, ActionType, PowerLimit
from schemas.itron import BatchJob, BatchRequest, BatchStatus, ChargingEventRecord, OnDemandRequest
from schemas.subscriptions import SubscriptionRequest, SubscriptionState, SubscriptionView
from schemas.topics import DEFAULT_PREFIX
from streamer import exports, powerlimits, subscriptions, webhooks
from streamer.eventquery import (
    PAGE_SIZE,
    PagePosition,
    QueryError,
    batch_query,
    on_demand_query,
    page_sql,
    subscription_condition,
)
from streamer.exports import UnknownJobError
from streamer.filewriters import MEDIA_TYPE
from streamer.metrics import StreamMetrics
from streamer.settings import DEFAULT_EXPORT_DIR
from streamer.subscriptions import UnknownSubscriptionError

log = logging.getLogger(__name__)
CORRELATION_HEADER = "Itron-CorrelationId"
NEXT_PAGE_HEADER = "Next-Page-Token"
BASE = "/dpss/api/v1/subscriptions"
CONTROL_BASE = "/api/v1"

_bearer = HTTPBearer(auto_error=False)
T = TypeVar("T")

ResourceId = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class ErrorBody(BaseModel):
    detail: str
    parameter: str | None = None


def _error(
    request: Request, status_code: int, detail: str, parameter: str | None = None
) -> JSONResponse:
    if request.url.path.startswith(CONTROL_BASE + "/"):
        envelope = ActionResponse(ok=False, message=detail)
        return JSONResponse(envelope.model_dump(by_alias=True), status_code=status_code)
    body = ErrorBody(detail=detail, parameter=parameter)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status_code)


def _parameter(loc: tuple[Any, ...]) -> str:
    names = [str(part) for part in loc if part not in ("body", "path", "header", "query")]
    return ".".join(names) or "body"


def create_app(
    pool: ConnectionPool,
    *,
    prefix: str = DEFAULT_PREFIX,
    export_dir: Path = DEFAULT_EXPORT_DIR,
    metrics: StreamMetrics | None = None,
    on_batch_request: Callable[[], None] = lambda: None,
    on_power_action: Callable[[], None] = lambda: None,
    command_expiry: timedelta = timedelta(seconds=60),
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    webhook_private_targets: bool = False,
) -> FastAPI:
    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorBody, "description": "The request cannot be run as sent; "
              "``parameter`` names what is wrong."},
        401: {"model": ErrorBody, "description": "No bearer token, or an unknown one."},
        403: {"model": ErrorBody, "description": "DataSubscriberId is not the token's."},
    }  # fmt: skip
    app = FastAPI(
        title="EV charging events",
        version="1",
        description="Subscriptions to live EVChargingEvents (seed 001), the data API: "
        "on-demand queries and batch-request exports (seed 000), and session power "
        "management: power limits on ongoing sessions, verified on the meter (seed 003).",
        responses=errors,
    )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{_parameter(e['loc'])}: {e['msg']}" for e in exc.errors()]
        first = _parameter(exc.errors()[0]["loc"]) if exc.errors() else None
        return _error(request, status.HTTP_400_BAD_REQUEST, "; ".join(problems), first)

    @app.exception_handler(QueryError)
    async def bad_query(request: Request, exc: QueryError) -> JSONResponse:
        return _error(request, status.HTTP_400_BAD_REQUEST, str(exc), exc.parameter)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = _error(request, exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    def openapi() -> dict[str, Any]:
        """FastAPI documents validation errors as 422; this API answers them with 400."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)  # fmt: skip
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation["responses"].pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.middleware("http")
    async def correlation(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        correlation_id = request.headers.get(CORRELATION_HEADER) or str(uuid.uuid4())
        response = await call_next(request)
        response.headers[CORRELATION_HEADER] = correlation_id
        log.info("%s %s -> %d [%s]", request.method, request.url.path, response.status_code,
                 correlation_id)  # fmt: skip
        return response

    def subscriber(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        data_subscriber_id: Annotated[str | None, Header(alias="DataSubscriberId")] = None,
    ) -> str:
        if credentials is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "Authorization: Bearer <token> is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        with pool.connection() as conn:
            found = subscriptions.authenticate(conn, credentials.credentials)
        if found is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "unknown or revoked token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if data_subscriber_id is not None and data_subscriber_id != found:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, "DataSubscriberId does not match the token"
            )
        return found

    Subscriber = Annotated[str, Depends(subscriber)]  # noqa: N806 (a type alias)
    not_found: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorBody, "description": "No such subscription for this subscriber."}
    }

    def owned(action: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``action`` in one committed transaction; an unknown id is a 404."""
        try:
            with pool.connection() as conn:
                return action(conn)
        except UnknownSubscriptionError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no subscription {exc}") from None

    @app.post(BASE, status_code=status.HTTP_201_CREATED)
    def create_subscription(body: SubscriptionRequest, who: Subscriber) -> SubscriptionView:
        return owned(lambda conn: subscriptions.create(conn, who, body, prefix=prefix))

    @app.get(BASE)
    def list_subscriptions(who: Subscriber) -> list[SubscriptionView]:
        with pool.connection() as conn:
            return subscriptions.list_views(conn, who, prefix=prefix)

    @app.get(BASE + "/{subscription_id}", responses=not_found)
    def read_subscription(subscription_id: ResourceId, who: Subscriber) -> SubscriptionView:
        return owned(lambda conn: subscriptions.get(conn, subscription_id, who, prefix=prefix))

    @app.post(BASE + "/{subscription_id}/pause", responses=not_found)
    def pause_subscription(subscription_id: ResourceId, who: Subscriber) -> SubscriptionView:
        return owned(lambda conn: subscriptions.set_state(
            conn, subscription_id, SubscriptionState.PAUSED, who, prefix=prefix))  # fmt: skip

    @app.post(BASE + "/{subscription_id}/resume", responses=not_found)
    def resume_subscription(subscription_id: ResourceId, who: Subscriber) -> SubscriptionView:
        return owned(lambda conn: subscriptions.set_state(
            conn, subscription_id, SubscriptionState.ACTIVE, who, prefix=prefix))  # fmt: skip

    @app.delete(
        BASE + "/{subscription_id}", status_code=status.HTTP_204_NO_CONTENT, responses=not_found
    )
    def delete_subscription(subscription_id: ResourceId, who: Subscriber) -> None:
        owned(lambda conn: subscriptions.delete(conn, subscription_id, who))

    def own_query_filter(conn: psycopg.Connection[Any], subscription_id: str, who: str) -> Any:
        view = subscriptions.get(conn, subscription_id, who, prefix=prefix)
        return subscription_condition(view.entity_type, view.entity_ids)

    @app.post(
        BASE + "/{subscription_id}/on-demand",
        response_model=list[ChargingEventRecord],
        responses={
            200: {
                "description": f"At most {PAGE_SIZE} completed charging events, newest first "
                "(by ChargeStartTime, then session). When more match, the "
                f"``{NEXT_PAGE_HEADER}`` header is set: send the same body with "
                "``PageToken`` set to it for the next page.",
                "headers": {
                    NEXT_PAGE_HEADER: {
                        "schema": {"type": "string"},
                        "description": "Present when more events match.",
                    }
                },
            },
            **not_found,
        },
    )
    def on_demand(subscription_id: ResourceId, body: OnDemandRequest, who: Subscriber) -> Response:
        started = time.perf_counter()

        def page(conn: psycopg.Connection[Any]) -> tuple[list[str], str | None]:
            query = on_demand_query(body, own_query_filter(conn, subscription_id, who), now=clock())
            after = PagePosition.from_token(body.page_token, query) if body.page_token else None
            statement, params = page_sql(query, after, PAGE_SIZE + 1)
            rows = conn.execute(statement, params).fetchall()
            records = [record for record, _, _ in rows[:PAGE_SIZE]]
            if len(rows) <= PAGE_SIZE:
                return records, None
            _, start, transaction_id = rows[PAGE_SIZE - 1]
            return records, PagePosition(start, transaction_id).token(query)

        records, next_token = owned(page)
        content = "[" + ",".join(records) + "]"
        response = Response(content, media_type="application/json")
        if next_token is not None:
            response.headers[NEXT_PAGE_HEADER] = next_token
        if metrics is not None:
            metrics.on_demand_latency.observe(time.perf_counter() - started)
        return response

    jobs_base = BASE + "/{subscription_id}/batch-request"

    @app.post(jobs_base, status_code=status.HTTP_202_ACCEPTED, responses=not_found)
    def batch_request(
        subscription_id: ResourceId,
        body: BatchRequest,
        who: Subscriber,
        request: Request,
        response: Response,
    ) -> BatchJob:
        """Queue an export; the job runs in the background. Poll the job, then download it."""

        def submit(conn: psycopg.Connection[Any]) -> BatchJob:
            query = batch_query(
                body.tokens, own_query_filter(conn, subscription_id, who), now=clock()
            )
            return exports.submit(
                conn, subscription_id, body, query,
                correlation_id=request.headers.get(CORRELATION_HEADER), base_path=BASE,
            )  # fmt: skip

        job = owned(submit)
        on_batch_request()
        response.headers["Location"] = f"{BASE}/{subscription_id}/batch-request/{job.job_id}"
        return job

    def owned_job(action: Callable[[psycopg.Connection[Any]], T]) -> T:
        try:
            return owned(action)
        except UnknownJobError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no batch request {exc}") from None

    @app.get(jobs_base, responses=not_found)
    def list_batch_requests(subscription_id: ResourceId, who: Subscriber) -> list[BatchJob]:
        """The subscription's latest 100 batch requests, newest first."""

        def jobs(conn: psycopg.Connection[Any]) -> list[BatchJob]:
            subscriptions.get(conn, subscription_id, who, prefix=prefix)
            return exports.list_jobs(conn, subscription_id, base_path=BASE)

        return owned(jobs)

    def job_of(subscription_id: str, job_id: str, who: str) -> BatchJob:
        def read(conn: psycopg.Connection[Any]) -> BatchJob:
            subscriptions.get(conn, subscription_id, who, prefix=prefix)
            return exports.get(conn, subscription_id, job_id, base_path=BASE)

        return owned_job(read)

    @app.get(jobs_base + "/{job_id}", responses=not_found)
    def read_batch_request(
        subscription_id: ResourceId, job_id: ResourceId, who: Subscriber
    ) -> BatchJob:
        return job_of(subscription_id, job_id, who)

    @app.get(
        jobs_base + "/{job_id}/file",
        response_class=FileResponse,
        responses={
            200: {"description": "The file; its SHA-256 is in the job and the Digest header.",
                  "content": {media: {} for media in MEDIA_TYPE.values()}},
            409: {"model": ErrorBody, "description": "The job is not done (yet)."},
            410: {"model": ErrorBody, "description": "The file is no longer kept."},
            **not_found,
        },
    )  # fmt: skip
    def download_batch_file(
        subscription_id: ResourceId, job_id: ResourceId, who: Subscriber
    ) -> FileResponse:
        job = job_of(subscription_id, job_id, who)
        if job.status is not BatchStatus.DONE:
            detail = f"the job is {job.status.value}" + (f": {job.reason}" if job.reason else "")
            raise HTTPException(status.HTTP_409_CONFLICT, detail)
        path = exports.file_path(export_dir, job.job_id, job.filetype)
        if not path.exists():
            raise HTTPException(status.HTTP_410_GONE, "the file is no longer kept")
        return FileResponse(
            path,
            media_type=MEDIA_TYPE[job.filetype],
            filename=f"ev-charging-events-{job.job_id}.{job.filetype.value}",
            headers={"Digest": f"sha-256={_b64_hex(job.sha256 or '')}"},
        )

    control_errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ActionResponse, "description": text}
        for code, text in (
            (400, "The request cannot be run as sent (``ok`` false, ``message`` says why)."),
            (401, "No bearer token, or an unknown one."),
            (403, "DataSubscriberId is not the token's."),
        )
    }

    def action_request(
        session_id: str, who: str, action_type: ActionType, limit: PowerLimit | None
    ) -> ActionResponse:
        try:
            with pool.connection() as conn:
                action = powerlimits.request(
                    conn, who, session_id, action_type, limit, expires_in=command_expiry,
                    now=clock(),
                )  # fmt: skip
        except powerlimits.SessionNotControllableError as exc:
            raise HTTPException(exc.status_code, str(exc)) from None
        if metrics is not None:
            metrics.power_actions.labels(action.type.value, action.status.value).inc()
        on_power_action()
        return ActionResponse(ok=True, result=action)

    session_errors: dict[int | str, dict[str, Any]] = {
        **control_errors,
        404: {"model": ActionResponse, "description": "No such session."},
        409: {"model": ActionResponse, "description": "The session has ended."},
    }
    action_doc = (
        " Returns the action, ``requested``; the edge agent's verified verdict (``completed`` "
        "when the meter sees the EV at or under the limit, else ``failed`` with a reason) "
        "follows as status events: webhooks, the subscriber's MQTT control topic, and "
        "``GET /api/v1/actions/{id}``."
    )

    @app.post(
        CONTROL_BASE + "/sessions/{session_id}/set_power_limit",
        responses=session_errors,
        response_model_exclude_none=True,
        description="Limit the power (W) or current (A) of an ongoing session." + action_doc,
    )
    def set_power_limit(
        session_id: ResourceId, body: PowerLimit, who: Subscriber
    ) -> ActionResponse:
        return action_request(session_id, who, ActionType.SET_POWER_LIMIT, body)

    @app.post(
        CONTROL_BASE + "/sessions/{session_id}/clear_power_limit",
        responses=session_errors,
        response_model_exclude_none=True,
        description="Remove a session's power limit." + action_doc,
    )
    def clear_power_limit(session_id: ResourceId, who: Subscriber) -> ActionResponse:
        return action_request(session_id, who, ActionType.CLEAR_POWER_LIMIT, None)

    @app.get(
        CONTROL_BASE + "/actions/{action_id}",
        response_model_exclude_none=True,
        responses={
            **control_errors,
            404: {"model": ActionResponse, "description": "No such action."},
        },
    )
    def read_action(action_id: ResourceId, who: Subscriber) -> ActionResponse:
        """An action with its whole status history."""
        try:
            with pool.connection() as conn:
                return ActionResponse(ok=True, result=powerlimits.get(conn, action_id, who))
        except powerlimits.UnknownActionError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no action {action_id}") from None

    @app.post(
        CONTROL_BASE + "/webhooks", status_code=status.HTTP_201_CREATED, responses=control_errors
    )
    def create_webhook(body: webhooks.WebhookRequest, who: Subscriber) -> webhooks.Webhook:
        """Status events of this subscriber's actions are POSTed here, signed with the secret
        returned (once) in this answer: ``EV-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
        "<unix>." + body>``, ``EV-Event-Id`` for de-duplication, in order per session."""
        try:
            with pool.connection() as conn:
                return webhooks.register(conn, who, body, private_targets=webhook_private_targets)
        except webhooks.RefusedTargetError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"url: {exc}") from None

    @app.get(CONTROL_BASE + "/webhooks", responses=control_errors, response_model_exclude_none=True)
    def list_webhooks(who: Subscriber) -> list[webhooks.Webhook]:
        with pool.connection() as conn:
            return webhooks.list_webhooks(conn, who)

    @app.delete(
        CONTROL_BASE + "/webhooks/{webhook_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses={
            **control_errors,
            404: {"model": ActionResponse, "description": "No such webhook."},
        },
    )
    def delete_webhook(webhook_id: ResourceId, who: Subscriber) -> None:
        try:
            with pool.connection() as conn:
                webhooks.delete(conn, who, webhook_id)
        except webhooks.UnknownWebhookError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no webhook {webhook_id}") from None

    return app


def _b64_hex(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()
