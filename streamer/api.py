"""The HTTP app: subscriptions now; the data API (on-demand, batch) extends the same app.

Every request needs ``Authorization: Bearer <token>`` of a data subscriber; a
``DataSubscriberId`` header, when sent, must name that subscriber. A subscriber sees only its
own subscriptions (another's is a 404, so ids cannot be probed). ``Itron-CorrelationId`` is
echoed back, or generated when absent, and logged with the request.
"""

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import psycopg
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool

from schemas.subscriptions import SubscriptionRequest, SubscriptionState, SubscriptionView
from schemas.topics import DEFAULT_PREFIX
from streamer import subscriptions
from streamer.subscriptions import UnknownSubscriptionError

log = logging.getLogger(__name__)
CORRELATION_HEADER = "Itron-CorrelationId"
BASE = "/dpss/api/v1/subscriptions"

_bearer = HTTPBearer(auto_error=False)
T = TypeVar("T")


def create_app(pool: ConnectionPool, *, prefix: str = DEFAULT_PREFIX) -> FastAPI:
    app = FastAPI(
        title="EV charging events",
        version="1",
        description="Subscriptions to live EVChargingEvents (seed 001) and the data API.",
    )

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
        404: {"description": "No such subscription for this subscriber."}
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
    def read_subscription(subscription_id: str, who: Subscriber) -> SubscriptionView:
        return owned(lambda conn: subscriptions.get(conn, subscription_id, who, prefix=prefix))

    @app.post(BASE + "/{subscription_id}/pause", responses=not_found)
    def pause_subscription(subscription_id: str, who: Subscriber) -> SubscriptionView:
        return owned(lambda conn: subscriptions.set_state(
            conn, subscription_id, SubscriptionState.PAUSED, who, prefix=prefix))  # fmt: skip

    @app.post(BASE + "/{subscription_id}/resume", responses=not_found)
    def resume_subscription(subscription_id: str, who: Subscriber) -> SubscriptionView:
        return owned(lambda conn: subscriptions.set_state(
            conn, subscription_id, SubscriptionState.ACTIVE, who, prefix=prefix))  # fmt: skip

    @app.delete(
        BASE + "/{subscription_id}", status_code=status.HTTP_204_NO_CONTENT, responses=not_found
    )
    def delete_subscription(subscription_id: str, who: Subscriber) -> None:
        owned(lambda conn: subscriptions.delete(conn, subscription_id, who))

    return app
