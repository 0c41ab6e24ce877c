"""`caseloom screenshots`: pictures of the running demo for the README, taken in Chromium.

Signs in as demo users and walks the main pages (list, form, a major case with its children,
the properties page). Each shot is declared as data: a user, a path or a way to reach the
page, and a file name under docs/.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


@dataclass(frozen=True)
class Shot:
    name: str
    user: str
    path: str
    prepare: Callable | None = None  # gets the page after navigation, may click around
    full_page: bool = False


def chromium_path() -> str:
    path = os.environ.get("CASELOOM_CHROMIUM") or "/usr/bin/chromium"
    if not os.path.exists(path):
        raise SystemExit(f"no Chromium at {path}; install it (apt-get install chromium) or set CASELOOM_CHROMIUM")
    return path


def _first_row(page) -> None:
    page.locator("table.list tbody tr").first.locator("a").first.click()
    page.wait_for_load_state()


def take(base_url: str, shots: list[Shot], out: Path, passwords: dict[str, str]) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        for shot in shots:
            context = browser.new_context(viewport={"width": 1280, "height": 860}, device_scale_factor=1)
            page = context.new_page()
            page.goto(f"{base_url}/login")
            page.fill("#user_name", shot.user)
            page.fill("#user_password", passwords[shot.user])
            page.click("button[type=submit]")
            page.wait_for_url(f"{base_url}/")
            page.goto(f"{base_url}{shot.path}")
            if shot.prepare:
                shot.prepare(page)
            page.wait_for_load_state("networkidle")  # what htmx fetches after the page (a dashboard's cards)
            target = out / f"{shot.name}.png"
            page.screenshot(path=str(target), full_page=shot.full_page)
            written.append(target)
            context.close()
        browser.close()
    return written


def _steps(name: str, steps: list[dict], first_row: bool) -> Callable:
    """What a person does before the picture, by what they read: `click` a button or link by its
    name, `fill` inputs by their labels, `select` options by label, `open` a <details> by its summary."""
    def run(page) -> None:
        if first_row:
            _first_row(page)
        for step in steps:
            if "click" in step:
                target = page.get_by_role("button", name=step["click"], exact=True)
                if not target.count():
                    target = page.get_by_role("link", name=step["click"], exact=True)
                target.first.click()
            elif "fill" in step:
                for label, value in step["fill"].items():
                    page.get_by_label(label).last.fill(str(value))
            elif "select" in step:
                for label, option in step["select"].items():
                    page.get_by_label(label).last.select_option(label=str(option))
            elif "open" in step:
                page.locator("summary", has_text=step["open"]).first.click()
            else:
                raise SystemExit(f"screenshot {name!r}: unknown step {step!r} (click, fill, select or open)")
            page.wait_for_load_state()

    return run


def plan_shots(plan: list[dict], module_paths: dict[str, str]) -> list[Shot]:
    """Shots from a plan (a list of {name, user, module | path, open_first, full_page, steps}); a module
    is a menu module's label, photographed as its list (or its first record with `open_first`), after
    the `steps` a person would take."""
    shots = []
    for item in plan:
        path = item.get("path") or module_paths.get(item.get("module", ""))
        if not path:
            raise SystemExit(f"screenshot {item.get('name')!r}: no menu module {item.get('module')!r} and no path")
        prepare = _steps(item["name"], item.get("steps") or [], bool(item.get("open_first")))
        shots.append(Shot(item["name"], item["user"], path, prepare, bool(item.get("full_page"))))
    return shots
