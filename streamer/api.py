"""The HTTP app: subscriptions (seed 001) and the data API (seed 000: on-demand, batch).

Every request needs ``Authorization: Bearer <token>`` of a data subscriber; a
``DataSubscriberId`` header, when sent, must name that subscriber. A subscriber sees only its
own subscriptions (another's is a 404, so ids cannot be probed). ``Itron-CorrelationId`` is
echoed back, or generated when absent, and logged with the request. A request the API cannot
run as sent (a malformed body, a bad date, a range outside the data available) is a 400 whose
``parameter`` names what is wrong.
"""

import base64
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
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

from schemas.itron import BatchJob, BatchRequest, BatchStatus, ChargingEventRecord, OnDemandRequest
from schemas.subscriptions import SubscriptionRequest, SubscriptionState, SubscriptionView
from schemas.topics import DEFAULT_PREFIX
from streamer import exports, subscriptions
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

_bearer = HTTPBearer(auto_error=False)
T = TypeVar("T")

ResourceId = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class ErrorBody(BaseModel):
    detail: str
    parameter: str | None = None


def _error(status_code: int, detail: str, parameter: str | None = None) -> JSONResponse:
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
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
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
        description="Subscriptions to live EVChargingEvents (seed 001) and the data API: "
        "on-demand queries and batch-request exports (seed 000).",
        responses=errors,
    )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{_parameter(e['loc'])}: {e['msg']}" for e in exc.errors()]
        first = _parameter(exc.errors()[0]["loc"]) if exc.errors() else None
        return _error(status.HTTP_400_BAD_REQUEST, "; ".join(problems), first)

    @app.exception_handler(QueryError)
    async def bad_query(request: Request, exc: QueryError) -> JSONResponse:
        return _error(status.HTTP_400_BAD_REQUEST, str(exc), exc.parameter)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        response = _error(exc.status_code, str(exc.detail))
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

    return app


def _b64_hex(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()
