"""The parity suite in a user's own pytest run (entry point ``pytest11``, installed with the
package): ``pytest --toolkit-exports DIR [--toolkit-baseline OLD]`` adds one test item per variant
and parity gate of the export in DIR (running `toolkit parity` first when DIR has no parity results
for its current generation), and, with a baseline, one item per `toolkit gate` check. Without
``--toolkit-exports`` the plugin adds nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from toolkit.verdicts import Verdict


def _gate_options() -> list:
    """The gate's own check options (`toolkit gate --help`), each offered here as --toolkit-NAME with the
    same type, default and help, so that the plugin and the command never drift apart."""
    import argparse

    from toolkit.cli.gate import PLUGIN_EXCLUDED, gate_args

    p = argparse.ArgumentParser(add_help=False)
    gate_args(p)
    return [a for a in p._actions if a.option_strings and a.option_strings[0] not in PLUGIN_EXCLUDED]


def pytest_addoption(parser) -> None:
    group = parser.getgroup("toolkit", "toolkit parity and gate checks of an export")
    group.addoption("--toolkit-exports", default=None, metavar="DIR",
                    help="check the export in DIR: one test per variant and parity gate")
    group.addoption("--toolkit-baseline", default=None, metavar="OLD_DIR",
                    help="also compare DIR with this export: one test per `toolkit gate` check")
    for action in _gate_options():
        kwargs = {"dest": f"toolkit_{action.dest}", "default": action.default,
                  "help": f"`toolkit gate {action.option_strings[0]}`: {action.help}"}
        if action.nargs == 0:  # a switch
            kwargs["action"] = "store_true"
        else:
            kwargs.update(type=action.type, nargs=action.nargs, metavar=action.metavar)
            kwargs["action"] = "append" if isinstance(action, argparse._AppendAction) else type(action)
        group.addoption("--toolkit-" + action.option_strings[0][2:], **kwargs)


class _Results:
    """Parity (and gate) results, computed once per session on first use."""

    def __init__(self, config):
        self.config = config
        self._parity = None
        self._gate = None

    @property
    def exports(self):
        from toolkit.exportdir import ExportDir

        return ExportDir(self.config.getoption("--toolkit-exports"))

    def parity(self):
        if self._parity is None:
            manifest = self.exports.manifest()
            parity = self.exports.parity(required=False)
            current = parity is not None and parity.get("export_generation") == manifest.get("generation")
            checked = ({k for k, v in parity["variants"].items() if "informational" not in v}
                       if current else set())  # not the plain int8 models shown beside controlled ones
            if not current or checked != {e["variant"] for e in manifest["artifacts"]}:
                from toolkit.config import ParityConfig
                from toolkit.parity import run_parity, write_outputs

                data_dir = self.config.getoption("--toolkit-data-dir")
                cfg = ParityConfig(exports=self.exports, data_dir=Path(data_dir) if data_dir else None, verbose=False)
                write_outputs(run_parity(cfg), cfg)
            self._parity = self.exports.parity()
        return self._parity

    def gate(self) -> dict:
        if self._gate is None:
            from toolkit.cli.gate import gate_config
            from toolkit.gate import run_gate

            self.parity()  # the new export's parity results and predictions must exist
            args = argparse.Namespace(baseline=Path(self.config.getoption("--toolkit-baseline")),
                                      exports=self.exports, quiet=True)
            for action in _gate_options():
                setattr(args, action.dest, self.config.getoption(f"toolkit_{action.dest}"))
            self._gate = run_gate(gate_config(args))
        return self._gate


class ToolkitItem(pytest.Item):
    def __init__(self, *, check, results: _Results, **kwargs):
        super().__init__(**kwargs)
        self.check = check  # (kind, key...) resolved against the results when run
        self.results = results

    def runtest(self) -> None:
        kind = self.check[0]
        if kind == "parity":
            _, variant, metric = self.check
            parity = self.results.parity()
            if variant not in parity["variants"]:
                why = next((f"{f['runtime']} could not {f['stage']} it: {f['reason']}"
                            for f in parity.get("failed") or [] if f["key"] == variant), "no parity result")
                raise ToolkitCheckFailed(f"{variant}: {why}")
            gate = next((g for g in parity["variants"][variant]["gates"] if g["metric"] == metric), None)
            if gate is None:
                pytest.skip(f"{variant}: gate {metric} does not apply to this run")
            verdict = Verdict.from_json(gate)
            self._decide(verdict.status, f"{variant}: {verdict}")
        else:
            _, index = self.check
            c = self.results.gate()["checks"][index]
            if c["status"] == "incomplete":  # a row the runtime could not load or run: the CLI exits 7
                raise ToolkitCheckFailed(f"{c['name']}: {c['detail']}")
            if c["status"] == "info":
                pytest.skip(c["detail"])
            self._decide(c["status"], f"{c['kind']} {c['name']}: {c['detail']}")

    def _decide(self, status: str, text: str) -> None:
        """The CLI's rule: fail fails; inconclusive is shown (a skip saying why) or, strict, fails."""
        if status == "fail" or (status == "inconclusive" and self.config.getoption("--toolkit-strict")):
            raise ToolkitCheckFailed(text)
        if status == "inconclusive":
            pytest.skip(f"INCONCLUSIVE: {text}")

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, ToolkitCheckFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.results.exports, None, self.name


class ToolkitCheckFailed(AssertionError):
    pass


def _parity_items(session, results: _Results) -> list[ToolkitItem]:
    from toolkit import runners
    from toolkit.config import Gates
    from toolkit.verdicts import parity_gates

    manifest = results.exports.manifest()
    items = []
    for e in manifest["artifacts"]:
        metrics = {"accuracy_diff_points": 0.0, "accuracy_diff_ci95_points": [0.0, 0.0], "agreement": 1.0,
                   "max_abs_logit_diff": 0.0, "images": 1}
        names = [g.metric for g in parity_gates(e["quantization"], metrics, Gates())]
        names += runners.default_for(e["format"]).parity.gate_names  # what its runtime's parity hooks add
        for metric in names:
            name = f"toolkit::parity::{e['variant']}::{metric}"
            items.append(ToolkitItem.from_parent(session, name=name, nodeid=name,
                                                 check=("parity", e["variant"], metric), results=results))
    return items


def _gate_items(session, results: _Results) -> list[ToolkitItem]:
    doc = results.gate()
    names = [f"toolkit::gate::{c['kind']}::{c['name']}" for c in doc["checks"]]
    return [ToolkitItem.from_parent(session, name=name, nodeid=name, check=("gate", i), results=results)
            for i, name in enumerate(names)]


def pytest_collection_modifyitems(session, config, items) -> None:
    if not config.getoption("--toolkit-exports"):
        return
    results = _Results(config)
    items.extend(_parity_items(session, results))
    if config.getoption("--toolkit-baseline"):
        items.extend(_gate_items(session, results))
