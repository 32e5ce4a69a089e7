"""MkDocs hooks of the documentation site: the API reference and the error pages follow the code.

* ``on_config``: the *Errors* section of the navigation lists one page per error class
  (``DOCUMENTED_ERRORS`` of ``iit.errors`` and ``causal_models.errors``, pages named by
  ``error_page``).
* ``on_files``: generates ``reference/<package>.md`` for every public package: one entry per name
  in the package's ``__all__``, rendered by mkdocstrings from its docstring. A name is rendered on
  the page of the most specific package that exports it; the others link to it. The build fails
  (``PluginError``) when a public name has no docstring, cannot be located, or when a page under
  ``docs/errors/`` has no error class (and the strict build fails on a class without a page).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

PUBLIC_PACKAGES = (
    "iit", "iit.training", "iit.transformers", "iit.attribution", "iit.search", "iit.featurizers",
    "iit.semiring", "causal_models", "causal_models.standard",
)
ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("mkdocs.hooks.iit")


@dataclass(frozen=True)
class PublicName:
    """One name of a package's ``__all__`` and where its documentation lives."""

    package: str  # the package whose __all__ lists it
    name: str
    path: str  # dotted path mkdocstrings renders (where it is defined)
    home: str  # the package whose reference page renders it


def _import(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(name)


@functools.cache
def _static_package(root: str):
    """The package as griffe reads it from source (aliases resolved), loaded once per build."""
    import griffe

    return griffe.load(root, search_paths=[str(ROOT)], resolve_aliases=True, resolve_external=False)


def _static_member(package: str, name: str):
    """``package.name`` as griffe reads it from source, followed to its definition (aliases resolved)."""
    root, _, rest = package.partition(".")
    member = _static_package(root)[f"{rest}.{name}" if rest else name]
    return member.final_target if member.is_alias else member


def _defined_path(package: str, name: str, obj: object) -> str:
    """The dotted path where ``obj`` is defined (classes, functions, modules) or assigned (data)."""
    if inspect.ismodule(obj):
        return obj.__name__
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    return _static_member(package, name).path


def _has_docstring(package: str, name: str, obj: object) -> bool:
    """Classes, functions and modules: their ``__doc__``; constants and type aliases: the string
    literal after their assignment (what mkdocstrings renders)."""
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
        return bool(obj.__doc__ and obj.__doc__.strip())
    member = _static_member(package, name)
    return member.docstring is not None and bool(member.docstring.value.strip())


def public_names() -> list[PublicName]:
    """Every ``__all__`` name of the public packages, each assigned one home page.

    Raises:
        PluginError: a public name without a docstring.
    """
    found: dict[str, list[tuple[str, str]]] = {}
    missing = []
    for package in PUBLIC_PACKAGES:
        module = _import(package)
        for name in module.__all__:
            obj = getattr(module, name)
            path = _defined_path(package, name, obj)
            found.setdefault(path, []).append((package, name))
            if not _has_docstring(package, name, obj):
                missing.append(f"{package}.{name}")
    if missing:
        raise PluginError(f"public names without a docstring: {', '.join(missing)}")
    names = []
    for path, exporters in found.items():
        # the most specific exporting package that contains the definition; else the first one
        inside = [p for p, _ in exporters if path.startswith(p + ".")]
        home = max(inside, key=len) if inside else exporters[0][0]
        names.extend(PublicName(package, name, path, home) for package, name in exporters)
    return names


def _reference_page(package: str, names: list[PublicName]) -> str:
    lines = [f"# `{package}`", "", f"::: {package}", "    options:", "      members: false",
             "      show_root_heading: false", ""]
    own = [n for n in names if n.package == package and n.home == package]
    elsewhere = [n for n in names if n.package == package and n.home != package]
    for entry in own:
        if entry.path in PUBLIC_PACKAGES:  # a subpackage listed in __all__: it has its own page
            lines += [f"## `{entry.name}`", "", f"The subpackage [`{entry.path}`]({entry.path}.md).", ""]
            continue
        lines += [f"::: {entry.path}", ""]
    if elsewhere:
        lines += ["## Also exported here", "",
                  f"Importable as `{package}.<name>`; documented with the package that defines them:", ""]
        lines += [f"* [`{n.name}`][{n.path}] (`{n.home}`)" for n in elsewhere]
        lines.append("")
    return "\n".join(lines)


def _index_page(names: list[PublicName]) -> str:
    rendered = {n.path for n in names}
    lines = ["# API reference", "",
             f"Every public name ({len(rendered)} objects, {len(names)} exports) of the packages below, "
             "generated from the docstrings (Google style: `Args`, `Returns`, `Raises`, shapes as "
             "`[batch, seq, d_model]`).", "", "| package | public names |", "|---|---|"]
    for package in PUBLIC_PACKAGES:
        count = sum(n.package == package for n in names)
        lines.append(f"| [`{package}`]({package}.md) | {count} |")
    return "\n".join(lines) + "\n"


def _error_classes() -> list[type[BaseException]]:
    classes: list[type[BaseException]] = []
    for module in ("causal_models.errors", "iit.errors"):
        classes.extend(_import(module).DOCUMENTED_ERRORS)
    return classes


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Append the *Errors* section (an index and one page per error class) to the navigation."""
    from causal_models.errors import error_page

    pages = [{cls.__name__: error_page(cls).removeprefix("docs/")} for cls in _error_classes()]
    config.nav = [entry for entry in config.nav if not (isinstance(entry, dict) and "Errors" in entry)]
    config.nav.append({"Errors": ["errors/index.md", *pages]})
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Generate the API reference pages; check the error pages match the error classes."""
    from causal_models.errors import error_page

    names = public_names()
    for package in PUBLIC_PACKAGES:
        files.append(File.generated(config, f"reference/{package}.md", content=_reference_page(package, names)))
    files.append(File.generated(config, "reference/index.md", content=_index_page(names)))
    log.info("API reference: %d public names documented", len({n.path for n in names}))

    expected = {error_page(cls).removeprefix("docs/") for cls in _error_classes()} | {"errors/index.md"}
    present = {f.src_uri for f in files if f.src_uri.startswith("errors/") and f.src_uri.endswith(".md")}
    if present - expected:
        raise PluginError(f"error pages without an error class: {sorted(present - expected)}")
    return files
