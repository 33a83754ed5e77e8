"""Drill files: every built-in drill loads; a bad file is refused with every
problem placed at file:line:column and named by its field."""

from __future__ import annotations

import pytest

from federation.drill.spec import (
    DrillError,
    builtin_names,
    load_drill,
    load_drill_text,
    parse_duration,
)

GOOD = """\
apiVersion: edgefed.io/v1
kind: Drill
metadata: {name: tiny}
spec:
  duration: 10s
  controller: {lostAfter: 2s}
  topology:
    sites:
      - {name: a, nodes: 2, labels: {region: eu}, link: {latency: 20ms, loss: 1%}}
      - {name: b, nodes: 1}
  workloads:
    - native: {apiVersion: edgefed.io/v1, kind: Deployment, metadata: {name: web},
               spec: {container: {image: none, command: [sleep, "9"]}}}
  faults:
    - {at: 5s, action: cut-link, site: b}
    - {at: 1s, action: kill-node, node: a-2}
    - {at: 2s, action: degrade-link, site: "@web/0", latency: 100ms, bandwidth: 1mbit}
  assertions: {maxDetection: 2s, maxReschedules: 1, singletons: [web]}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(DrillError) as caught:
        load_drill_text(text, filename="d.yaml")
    return [str(p) for p in caught.value.problems]


def test_a_good_drill_loads_with_faults_in_time_order():
    drill = load_drill_text(GOOD, filename="d.yaml")
    assert drill.name == "tiny"
    assert drill.lost_after == 2.0
    assert list(drill.nodes()) == ["a-1", "a-2", "b-1"]
    assert drill.sites[0].link.latency == pytest.approx(0.02)
    assert drill.sites[0].link.loss == pytest.approx(0.01)
    assert [f.action for f in drill.faults] == ["kill-node", "degrade-link", "cut-link"]
    assert drill.faults[1].link.bandwidth == 125_000
    assert drill.assertions.max_reschedules == 1
    assert drill.assertions.lost_slots == 0  # checked unless told otherwise
    assert drill.assertions.singletons == ("web",)
    assert drill.workloads[0].kind == "native"
    assert drill.workloads[0].where == "d.yaml:12"


@pytest.mark.parametrize("name", builtin_names())
def test_every_builtin_drill_loads_and_fits_in_a_minute(name):
    drill = load_drill(name)
    assert drill.name == name
    assert drill.duration <= 30
    assert drill.faults and drill.workloads
    assert drill.description


@pytest.mark.parametrize(("edit", "expected"), [
    (("action: kill-node, node: a-2", "action: kill-node, node: z-9"),
     "d.yaml:16:35: error: spec.faults[1].node: no node 'z-9' in the topology"),
    (("action: cut-link, site: b", "action: cut-links, site: b"),
     "d.yaml:15:16: error: spec.faults[0].action: unknown action 'cut-links'"),
    (("action: cut-link, site: b", "action: cut-link"),
     "spec.faults[0].site: cut-link needs the site whose link it acts on"),
    (("duration: 10s", "duration: ten"),
     "d.yaml:5:3: error: spec.duration: expected a duration like 2s or 500ms, found 'ten'"),
    (("duration: 10s", "duration: 4s"),
     "d.yaml:15:7: error: spec.faults[0]: ends at 5 s, after the drill's duration (4 s)"),
    (("nodes: 2,", "nodes: 0,"), "spec.topology.sites[0].nodes: expected an integer 1..20"),
    (("{name: b, nodes: 1}", "{name: a, nodes: 1}"),
     "spec.topology.sites[1].name: site 'a' is declared twice"),
    (("loss: 1%", "loss: 3"), "spec.topology.sites[0].link.loss: expected a share 0..1"),
    (("maxDetection: 2s", "maxDetecton: 2s"),
     "d.yaml:18:16: error: spec.assertions.maxDetecton: unknown field"),
    (("kind: Drill", "kind: Deployment"), "d.yaml:2:1: error: kind: expected Drill"),
    (("- native: {", "- helm: {"), "spec.workloads[0].helm: unknown field"),
    (("site: \"@web/0\", latency: 100ms, bandwidth: 1mbit", "site: a"),
     "degrade-link needs at least one of latency, jitter, loss, bandwidth"),
    (("action: cut-link, site: b", "action: cut-link, site: b, latency: 1s"),
     "spec.faults[0].latency: only degrade-link takes link properties"),
    (("action: cut-link, site: b", "action: scale, deployment: web"),
     "spec.faults[0].replicas: scale needs the number of replicas"),
    (("action: cut-link, site: b", "action: restart-broker, freshDatabase: true"),
     "spec.faults[0].freshDatabase: only restart-controller takes freshDatabase"),
])
def test_a_bad_field_is_refused_where_it_is(edit, expected):
    old, new = edit
    assert old in GOOD
    found = problems(GOOD.replace(old, new, 1))
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_in_one_pass():
    text = GOOD.replace("duration: 10s", "duration: x").replace("node: a-2", "node: q")
    found = problems(text)
    assert len(found) == 2
    assert found[0].startswith("d.yaml:5:")


def test_broken_yaml_is_placed():
    [problem] = problems("apiVersion: edgefed.io/v1\nkind: [Drill\n")
    assert problem.startswith("d.yaml:3:")


def test_an_unknown_builtin_lists_the_known_ones():
    with pytest.raises(DrillError) as caught:
        load_drill("no-such-drill")
    assert "node-crash" in str(caught.value)


@pytest.mark.parametrize(("text", "seconds"), [("2s", 2.0), ("500ms", 0.5), ("1m", 60.0),
                                                (3, 3.0), ("0.25s", 0.25)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)
