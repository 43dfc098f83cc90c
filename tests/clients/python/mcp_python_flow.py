"""The Python `mcp` SDK's OAuthClientProvider, pointed at the gateway's protected /mcp, runs the
whole flow: 401 → RFC 9728 → discovery → registration → PKCE authorization (the built-in consent
page, approved as a browser would) → token (with RFC 9207 iss) → initialize → tools/call whoami.

Usage: python mcp_python_flow.py <mcp url> <expected user>   (exit status 0 when every check holds)
"""

import asyncio
import re
import sys
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

REDIRECT = "http://127.0.0.1:33420/callback"


class MemoryStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def main(mcp_url: str, expected_user: str) -> None:
    callback: dict[str, str] = {}

    async def approve_in_browser(authorization_url: str) -> None:
        async with httpx2.AsyncClient() as browser:
            resp = await browser.get(authorization_url)
            assert resp.status_code == 302, resp.text
            consent_url = resp.headers["location"]
            page = (await browser.get(consent_url)).text
            field = lambda name: re.search(f'name="{name}" value="([^"]*)"', page).group(1)  # noqa: E731
            form = {"request_id": field("request_id"), "csrf_token": field("csrf_token"), "decision": "approve"}
            resp = await browser.post(consent_url.split("?")[0], data=form)
            assert resp.status_code == 303, resp.text
            back = parse_qs(urlsplit(resp.headers["location"]).query)
            callback.update({k: v[0] for k, v in back.items()})

    async def return_to_app() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=callback["code"], state=callback.get("state"), iss=callback.get("iss"))

    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="python mcp test",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=approve_in_browser,
        callback_handler=return_to_app,
    )
    async with httpx2.AsyncClient(auth=provider) as http:
        async with streamable_http_client(mcp_url, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                tools = await session.list_tools()
                assert [t.name for t in tools.tools] == ["whoami"], tools
                result = await session.call_tool("whoami", {})
                who = result.structured_content
                assert who["subject"] == expected_user, who
                assert who["authorization_header_seen"] is False, who
                assert who["client_id"] == storage.client.client_id, who
    assert callback.get("iss"), "the authorization response carried iss"
    assert storage.tokens and storage.tokens.refresh_token, "tokens were stored"
    print("python mcp SDK: discovery, registration, consent, token and tools/call whoami: ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
