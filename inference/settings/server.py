"""Settings of the HTTP server: access, address, shutdown and the per-client limits."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode


class ServerSettings(BaseModel):
    """AUTH_TOKEN, UI, HOST, PORT, LOG_LEVEL, SHUTDOWN_GRACE_S, MAX_CONNECTIONS, RATE_LIMIT_*,
    TRUSTED_PROXIES and CORS_ALLOW_ORIGINS."""

    auth_token: SecretStr | None = Field(
        None,
        description="When set, /predict*, the predictions routes, /v1/images/generations and "
        "/metrics need 'Authorization: Bearer <token>'.",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token of the admin routes (/admin/models: live traffic weights); "
        "unset, AUTH_TOKEN is used; with neither set the admin routes answer 404, so an open "
        "server never lets anyone re-weight it.",
    )
    ui: bool = Field(
        True, description="Serve the Gradio UI at /ui (needs the 'ui' extra); false skips it."
    )
    host: str = Field(
        "127.0.0.1",
        description="Address to listen on: 127.0.0.1 keeps the server on this machine, 0.0.0.0 "
        "serves every interface (containers: the Space's Dockerfile sets it). serve --host sets it "
        "too.",
    )
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on (serve --port).")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log records printed: debug, info, warning or error."
    )
    shutdown_grace_s: float = Field(
        25.0,
        ge=0,
        le=3600,
        description="On SIGTERM, how long queued and running requests may finish before they "
        "fail with 503 (new ones get 503 at once).",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Open connections and requests uvicorn serves at once; beyond, it answers "
        "503. Bounds the file descriptors slow or half-sent requests can hold.",
    )
    rate_limit_per_minute: int = Field(
        0,
        ge=0,
        description="Requests per minute each client may make to the protected routes "
        "(/predict*, /metrics): 429 with Retry-After beyond; 0 turns the limit off.",
    )
    rate_limit_burst: int = Field(
        10, ge=1, description="Requests a client may make at once before the rate applies."
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated addresses or networks (CIDR) of proxies whose "
        "X-Forwarded-For names the client (a Space's or Modal's proxy); others are ignored.",
    )
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins whose browser apps may call the API (CORS); "
        "none by default, '*' for any.",
    )

    @field_validator("trusted_proxies", "cors_allow_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network; use e.g. 10.0.0.0/8"
                ) from None
        return value

    @model_validator(mode="after")
    def _empty_token_is_off(self) -> ServerSettings:
        if self.auth_token is not None and not self.auth_token.get_secret_value():
            self.auth_token = None  # AUTH_TOKEN="" means auth off, not "the empty token"
        if self.admin_token is not None and not self.admin_token.get_secret_value():
            self.admin_token = None
        return self
