"""llama-cpp-python's OpenAI-compatible server as a user would run it, plus one knob for the tests:
FIRST_TOKEN_DELAY_MS holds back the first body chunk of every completion by that long (a slower
release: a larger context, a cold cache), and TOKEN_DELAY_MS holds back every later chunk (a release
slower per token). The delays are in the user's image, never in Rollwise.
`interrupt_requests=False`: by default a new request cuts off the stream in progress (empty 200
answers under concurrent load), which no one serving users runs with. Every answer carries
MODEL_VERSION in an `x-model-version` header, so a client can tell which release answered
(llama-cpp-python names the model file, or the request's `model`, in its answers' `model`)."""

import asyncio
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from llama_cpp.server.app import create_app  # type: ignore[import-not-found]  # in the image only
from llama_cpp.server.settings import ModelSettings, ServerSettings  # type: ignore[import-not-found]

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]
App = Callable[[Message, Receive, Send], Awaitable[None]]

DELAY = int(os.environ.get("FIRST_TOKEN_DELAY_MS", "0")) / 1000
TOKEN_DELAY = int(os.environ.get("TOKEN_DELAY_MS", "0")) / 1000
PORT = int(os.environ.get("PORT", "9000"))
VERSION = os.environ.get("MODEL_VERSION", "dev").encode()


def delayed(app: App) -> App:
    async def asgi(scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        post, first = scope["method"] == "POST", True

        async def held(message: Message) -> None:
            nonlocal first
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-model-version", VERSION)]
            if message["type"] == "http.response.body" and post and message.get("body"):
                await asyncio.sleep(DELAY if first else TOKEN_DELAY)
                first = False
            await send(message)

        await app(scope, receive, held)

    return asgi


if __name__ == "__main__":
    model = ModelSettings(model="/models/tiny.gguf", n_ctx=512, n_threads=1, verbose=False)
    server = ServerSettings(host="127.0.0.1", port=PORT, interrupt_requests=False)
    app = create_app(server_settings=server, model_settings=[model])
    uvicorn.run(delayed(app), host="127.0.0.1", port=PORT, log_level="warning")
