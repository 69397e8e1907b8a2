"""The serving map: routes rebuilt whole from READY transitions and listings."""

from __future__ import annotations

from pathlib import Path

from keepwarm.config import ModelConfig, VersionPolicy
from keepwarm.core.entry import Entry
from keepwarm.core.ids import ModelId
from keepwarm.core.states import State
from keepwarm.serving import ServingMap
from keepwarm.signature import Signature
from keepwarm.sources.listing import ModelListing, VersionListing


def listing(name: str, versions: list[int], **config: object) -> dict[str, ModelListing]:
    found = {v: VersionListing(v, Path(f"/r/{name}/{v}"), True, None) for v in versions}
    return {name: ModelListing(name, Path(f"/r/{name}"), ModelConfig(**config), None, found)}  # type: ignore[arg-type]


class Loaded:
    signature = Signature(inputs=(), outputs=())

    def predict(self, inputs: dict[str, object]) -> dict[str, object]:
        return inputs


def entry(name: str, version: int, state: State) -> Entry:
    e = Entry(ModelId(name, version), spec=None)  # type: ignore[arg-type]
    e.state = state
    e.model = Loaded()
    return e


def test_routes_follow_ready_transitions_and_the_listing() -> None:
    serving = ServingMap(on_demand=False)
    serving.set_listing(
        listing("m", [1, 2], labels={"stable": 1}, policy=VersionPolicy("all", 1, ()))
    )
    assert serving.get("m") is not None and serving.get("m").find(None) is None  # type: ignore[union-attr]
    one = entry("m", 1, State.READY)
    serving.on_transition(one)
    before = serving.routes
    route = serving.get("m")
    assert route is not None
    assert route.find(None).entry is one and route.find("stable").entry is one  # type: ignore[union-attr]
    assert route.find(1).model.version == 1  # type: ignore[union-attr]
    assert route.find(True) is None and route.find("nightly") is None
    two = entry("m", 2, State.READY)
    serving.on_transition(two)
    assert serving.routes is not before  # replaced whole, the old one untouched
    assert before["m"].find(None).entry is one  # type: ignore[union-attr]
    assert serving.get("m").find(None).entry is two  # type: ignore[union-attr]
    two.state = State.DRAINING
    serving.on_transition(two)
    assert serving.get("m").find(2) is None  # type: ignore[union-attr]
    assert serving.get("m").find(None).entry is one  # type: ignore[union-attr]
    serving.set_listing(listing("m", [2]))  # version 1 gone from disk: never routed
    assert serving.get("m").find(1) is None  # type: ignore[union-attr]
    serving.set_listing({})
    assert serving.get("m") is None
