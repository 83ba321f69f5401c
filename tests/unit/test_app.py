"""`create_app` gives an ASGI app that mounts inside a user's own FastAPI application."""

from fastapi import FastAPI
from fastapi.testclient import TestClient

from watchroute import Settings, create_app


def test_mounted_inside_another_app(tmp_path):
    live = create_app(Settings(database=f"sqlite:///{tmp_path / 'live.db'}"))
    # Starlette types a router's lifespan as either kind (with state or without), FastAPI wants one.
    app = FastAPI(lifespan=lambda _: live.router.lifespan_context(live))  # type: ignore[arg-type]
    app.mount("/live", live)

    @app.get("/own")
    def own() -> dict:
        return {"mine": True}

    with TestClient(app, base_url="http://localhost") as c:
        assert c.get("/own").json() == {"mine": True}
        created = c.post("/live/v1/notes", json={"text": "hi"})
        assert created.status_code == 201
        assert created.headers["location"] == f"/live/v1/notes/{created.json()['id']}"
        events = c.get("/live/v1/notes", params={"watch": "longpoll", "since": 0}).json()
        assert [e["object"]["data"] for e in events["events"]] == [{"text": "hi"}]
