"""The governance policy file (``policy.yaml``, path in the desk config):
read with PyYAML, validated by :func:`core.policy.parse_policy`.

Validated at start (:func:`load_policy_file`: a bad file refuses to start,
exit 2) and on reload (:func:`reload_policy`: a bad file is reported and the
policy in force stays). Every error names the file, and for a bad rule the
rule (``rules[i]``, 0-based, and its name) and the field; a YAML syntax error
names the line and column. A key written twice in one mapping (two
``threshold:`` lines in a rule) is refused too: PyYAML would silently keep
the last one. ``examples/policy.yaml`` is a documented example.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.policy import Policy, PolicyEngine, PolicyError, parse_policy


def _loader() -> type:
    """A SafeLoader that refuses a key repeated in one mapping."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                self.flatten_mapping(node)  # merge keys (<<) first, as SafeConstructor does
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    break
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r} (first at line {first.line + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def _yaml_error(path: Path, exc: Exception) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    what = f"{context}: {problem}" if context and "duplicate" not in problem else problem
    if context and "block scalar" in context:
        what += " (quote comparison operators: op: '>=')"
    return ConfigError(f"{where}: not valid YAML: {what}")


def load_policy_file(path: str | Path) -> Policy:
    """Read and validate the policy at ``path``.

    Returns:
        the :class:`core.policy.Policy` (``source`` the path as given,
        ``digest`` the sha256 of the file's text).

    Raises:
        ConfigError: a missing or unreadable file (``policy.yaml: cannot
            read: No such file or directory``), bad YAML with its line and
            column (``policy.yaml:7:9: not valid YAML: …``), a repeated key,
            or a bad rule naming the rule and the field (``policy.yaml:
            rules[2] (name 'dd-halt'): threshold: expected a number, got
            'abc'``).
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the policy: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        data = yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _yaml_error(p, exc) from None
    try:
        return parse_policy(data, str(p), text=text)
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None


def reload_policy(engine_policy: PolicyEngine, path: str | Path) -> tuple[bool, str]:
    """Re-read ``path`` and put it in force in ``engine_policy`` when valid.

    Returns:
        ``(applied, message)``: ``(True, "policy.yaml reloaded: 6 rules,
        sha256 …; 5 kept their state, changed or new: x, removed: y")``;
        ``(True, "policy.yaml unchanged: …")`` when the text is the same
        (nothing is reset); ``(False, "policy.yaml not reloaded, the policy
        in force stays (…): <the error>")`` when the file is bad, in which
        case ``engine_policy`` is untouched. Never raises for a bad file.
    """
    try:
        new = load_policy_file(path)
    except ConfigError as exc:
        return False, f"{path} not reloaded, the policy in force stays ({engine_policy.summary()}): {exc}"
    if new.digest == engine_policy.policy.digest and new.source == engine_policy.policy.source:
        return True, f"{path} unchanged: {engine_policy.summary()}"
    kept, fresh, removed = engine_policy.reload(new)
    parts = [f"{path} reloaded: {engine_policy.summary()}", f"{len(kept)} kept their state"]
    if fresh:
        parts.append(f"changed or new: {', '.join(fresh)}")
    if removed:
        parts.append(f"removed: {', '.join(removed)}")
    return True, "; ".join(parts)


def check_targets(policy: Policy, *, models: set[str], families: set[str], venues: set[str]) -> None:
    """Refuse a rule whose ``target`` names nothing in this run: a model
    (``pause_model``, ``rollback``) that is neither a seed version nor a
    refit name of a configured family (``<family>_v<N>``), or a venue
    (``pause_venue``) that is not traded. A typo would make the rule never
    act.

    Raises:
        ConfigError: naming the file, the rule and the target, with the
            known names.
    """
    import re

    for i, r in enumerate(policy.rules):
        if r.target is None:
            continue
        where = f"{policy.source}: rules[{i}] (name {r.name!r}): target"
        if r.action in ("pause_model", "rollback"):
            refit = any(re.fullmatch(re.escape(f) + r"_v\d+", r.target) for f in families)
            if r.target not in models and not refit:
                raise ConfigError(f"{where}: no model {r.target!r} in this run; known: {', '.join(sorted(models))} "
                                  f"(or a refit <family>_v<N> of {', '.join(sorted(families))})")
        elif r.action == "pause_venue" and r.target not in venues:
            raise ConfigError(f"{where}: no venue {r.target!r} in this run; known: {', '.join(sorted(venues))}")
