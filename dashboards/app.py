"""`dibs dashboard`: the results store in the browser (FastAPI, plotly.js from the installed plotly).

Pages: runs (filter, pick runs to compare), compare (any metric against step / rollouts / tokens / wall
time, seeds pooled as mean and 95% band, budget to a typed target, where each setting's budget went by
reference pass rate: ``budget.py``), run (config, metrics, where the budget went) and sweep (parallel
coordinates, parameter importance). Pages are Jinja templates (autoescaped); charts are figures built by
``figures.py`` and fetched as JSON by ``static/dashboard.js``.

Read-only by construction: every route is a GET over a ``StoreReader`` whose database refuses writes,
queries come from SQLAlchemy with request values as bound parameters, and the Content-Security-Policy
allows scripts from this server only (no inline script, no CDN). Requests must name the address it was
bound to in their Host header (``hosts.py``, against DNS rebinding), and error answers name neither the
store nor a file.
"""

from __future__ import annotations

import math
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import plotly
import plotly.io as pio
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse
from fastapi.templating import Jinja2Templates

from dibs.platform.core import metrics as M
from dibs.platform.store.prepass import is_prepass
from dibs.platform.store.reader import StoreReader
from dibs.platform.store.sql import StoreError, UnknownRun

from . import compare, figures, sweeps
from .budget import BINS, MAX_BINS, read_budget
from .efficiency import DAGGER_NOTE, NOT_BUDGET_HONEST
from .hosts import host_policy
from .series import X_AXES, X_METRICS

HERE = Path(__file__).resolve().parent
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
RUN_FILTERS = ("experiment", "algorithm", "allocator", "sweep", "status")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
Runs = Annotated[list[str] | None, Query()]  # ?run=a&run=b; None: no run given


def create_app(
    url: str, *, host: str = "127.0.0.1", port: int | None = None, allowed_hosts: Sequence[str] = ()
) -> FastAPI:
    """The dashboard over the store at ``url`` (raises StoreError when it cannot be read), answering only
    requests whose Host header names ``host``:``port`` as ``hosts.host_policy`` reads them (``port``
    None: any port)."""
    reader = StoreReader(url)
    policy = host_policy(host, port, allowed_hosts)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        reader.close()

    app = FastAPI(title="dibs dashboard", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.reader = reader
    templates = Jinja2Templates(directory=HERE / "templates")

    @app.middleware("http")  # added first, so inside _headers: a refusal carries its headers too
    async def _host(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not policy.allows(request.headers.get("host")):  # DNS rebinding (hosts.py)
            return PlainTextResponse("Invalid host header", status_code=400)
        return await call_next(request)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def _plotly() -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="text/javascript")

    @app.get("/static/{name}", include_in_schema=False)
    def _static(name: str) -> FileResponse:
        if name not in ("dashboard.js", "dashboard.css"):
            raise HTTPException(404, "not found")
        return FileResponse(HERE / "static" / name)

    _pages(app, reader, templates)
    _api(app, reader)
    return app


def _pages(app: FastAPI, reader: StoreReader, templates: Jinja2Templates) -> None:
    @app.get("/", response_class=HTMLResponse)
    def runs_page(request: Request, experiment: str = "", algorithm: str = "", allocator: str = "",
                  sweep: str = "", status: str = "") -> Response:  # fmt: skip
        chosen = {"experiment": experiment, "algorithm": algorithm, "allocator": allocator, "sweep": sweep,
                  "status": status}  # fmt: skip
        runs = [_table_row(run) for run in _read(reader.runs)]
        options = {key: sorted({str(r[key]) for r in runs if r[key] is not None}) for key in RUN_FILTERS}
        shown = [r for r in runs if all(not v or str(r[k]) == v for k, v in chosen.items())]
        context = {"runs": shown, "total": len(runs), "options": options, "chosen": chosen,
                   "sweeps": _read(reader.sweeps)}  # fmt: skip
        return templates.TemplateResponse(request, "runs.html", context)

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page(request: Request, run: Runs = None, metric: str = "", x: str = "step",
                     target: str = "") -> Response:  # fmt: skip
        runs = _selected(reader, run)
        names = _read(reader.metric_names, [r["id"] for r in runs])
        if metric not in names:  # default: held-out accuracy, else the first metric recorded
            metric = M.EVAL_ACCURACY if M.EVAL_ACCURACY in names else next(iter(names), "")
        rows = [_table_row(r) for r in runs]
        honest = all(r["allocator"] not in NOT_BUDGET_HONEST for r in rows if not r["prepass"])
        note = "" if honest else DAGGER_NOTE
        context = {"runs": rows, "names": names, "metric": metric, "x": x if x in X_AXES else "step",
                   "axes": figures.X_TITLES, "target": target, "dagger_note": note}  # fmt: skip
        return templates.TemplateResponse(request, "compare.html", context)

    @app.get("/run/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str) -> Response:
        run = _read(reader.run, run_id)
        steps = sorted({row["step"] for row in run["prompt_stats"]})
        finals: dict[str, Any] = {}
        for row in run["metrics"]:  # rows are by step, so the last one seen is the final value
            finals[row["name"]] = row
        context = {"run": run, "facts": compare.run_facts(run["config"]),
                   "config": compare.flatten(run["config"]), "finals": finals, "steps": steps}  # fmt: skip
        return templates.TemplateResponse(request, "run.html", context)

    @app.get("/sweep/{sweep_id}", response_class=HTMLResponse)
    def sweep_page(request: Request, sweep_id: str) -> Response:
        sweep = _sweep(reader, sweep_id)
        trials = _read(reader.trials, sweep_id)
        runs = {r["trial_id"]: r["id"] for r in _read(reader.runs, sweep_id=sweep_id)}
        context = {"sweep": sweep, "trials": trials, "runs": runs,
                   "params": sorted({k for t in trials for k in t["params"]})}  # fmt: skip
        return templates.TemplateResponse(request, "sweep.html", context)


def _api(app: FastAPI, reader: StoreReader) -> None:
    @app.get("/api/compare")
    def compare_curves(run: Runs = None, metric: str = M.EVAL_ACCURACY, x: str = "step") -> Response:
        if x not in X_AXES:
            raise HTTPException(400, f"x must be one of {', '.join(X_AXES)}")
        groups = compare.group_runs(_selected(reader, run))
        rows = _read(reader.metrics, run or [], metric)
        if x in X_METRICS and metric != X_METRICS[x]:  # the axis's own metric rows place the points
            extra = _read(reader.metrics, run or [], X_METRICS[x])
            rows = {k: [*rows.get(k, []), *extra.get(k, [])] for k in rows.keys() | extra.keys()}
        curves = [compare.group_curve(g, rows, metric, x) for g in groups]
        return _figure(figures.curves_figure(curves, metric, x))

    @app.get("/api/targets")
    def targets(target: float, run: Runs = None, metric: str = M.EVAL_ACCURACY) -> list[dict]:
        if not math.isfinite(target):
            raise HTTPException(400, "target must be a finite number")
        groups = compare.group_runs(_selected(reader, run))
        table = compare.budget_to_target(groups, _read(reader.metrics, run or [], metric), metric, target)
        return [{"group": row["group"], "runs": row["runs"], "reached": row["reached"],
                 "rollouts": compare.format_mean_ci(row["rollouts"], row["censored"]),
                 "steps": compare.format_mean_ci(row["steps"], row["censored"])}
                for row in table]  # fmt: skip

    @app.get("/api/compare/budget")
    def compare_budget(run: Runs = None, bins: int = BINS) -> Response:
        if not 1 <= bins <= MAX_BINS:
            raise HTTPException(400, f"bins must be in 1..{MAX_BINS}")
        ref, spreads = _read(read_budget, reader, _selected(reader, run), bins)
        return _figure(figures.spread_figure(ref, spreads))

    @app.get("/api/run/{run_id}/budget")
    def budget(run_id: str, step: int | None = None) -> Response:
        rows = _read(reader.run, run_id)["prompt_stats"]
        steps = sorted({r["step"] for r in rows})
        if step is None:
            step = steps[-1] if steps else 0
        return _figure(figures.budget_scatter(rows, step))

    @app.get("/api/run/{run_id}/allocation")
    def allocation(run_id: str) -> Response:
        return _figure(figures.allocation_heatmap(_read(reader.run, run_id)["prompt_stats"]))

    @app.get("/api/sweep/{sweep_id}/parcoords")
    def parcoords(sweep_id: str) -> Response:
        sweep = _sweep(reader, sweep_id)
        return _figure(figures.parcoords_figure(_read(reader.trials, sweep_id), sweep["objective"]))

    @app.get("/api/sweep/{sweep_id}/importance")
    def importance(sweep_id: str) -> Response:
        sweep = _sweep(reader, sweep_id)
        return _figure(
            figures.importance_figure(sweeps.param_importance(_read(reader.trials, sweep_id), sweep["mode"]))
        )


def _read(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a reader method; a store error becomes a 404 (unknown run) or a 503 (database trouble).
    Neither names the store: its path or URL says where the machine keeps its files, or a database user,
    to whoever can load a page. The 503's reason goes to the server's stderr instead."""
    try:
        return method(*args, **kwargs)
    except UnknownRun as exc:
        raise HTTPException(404, exc.what) from exc
    except StoreError as exc:
        print(f"dibs dashboard: {exc}", file=sys.stderr, flush=True)
        raise HTTPException(503, "the results store cannot be read now (see the dashboard's log)") from exc


def _selected(reader: StoreReader, ids: list[str] | None) -> list[dict[str, Any]]:
    """The runs ``ids`` names, in that order (a repeated id once); 404 for an unknown one."""
    wanted = list(dict.fromkeys(ids or []))
    found = {r["id"]: r for r in _read(reader.runs, ids=wanted)}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise HTTPException(404, f"no run with id {missing[0]!r}")
    return [found[i] for i in wanted]


def _sweep(reader: StoreReader, sweep_id: str) -> dict[str, Any]:
    for sweep in _read(reader.sweeps):
        if sweep["id"] == sweep_id:
            return sweep
    raise HTTPException(404, f"no sweep with id {sweep_id!r}")


def _table_row(run: dict[str, Any]) -> dict[str, Any]:
    return {**run, **compare.run_facts(run["config"]), "sweep": run["sweep_id"], "prepass": is_prepass(run)}


def _figure(fig: Any) -> Response:
    # plotly's encoder turns numpy arrays and NaN into JSON (NaN -> null) that plotly.js reads.
    return Response(pio.to_json(fig, validate=False), media_type="application/json")


def check_bindable(host: str, port: int) -> None:
    """OSError now when ``host:port`` cannot be bound, so that the CLI reports it in one line rather
    than through uvicorn's log after its banner."""
    with socket.create_server((host, port)):
        pass


def serve(app: FastAPI, *, host: str, port: int) -> None:
    """Serve ``app`` until interrupted (uvicorn, one process)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")
