"""`newscat audit`: alias moves that newscat did not make (the UI's alias editor, *Promote model*, the REST API).

Every alias newscat sets is recorded in the registered model's `newscat.aliases` tag (alias -> version) and in its
history. An alias that points elsewhere than that record, or that exists without one, was moved outside newscat and
so bypassed the gate's audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from newscat.registry.versions import alias_history, recorded_aliases


@dataclass(frozen=True)
class AliasFinding:
    """One alias whose registry state differs from newscat's record."""

    alias: str
    registry: str | None  # the version the registry points at (None: the alias was removed)
    recorded: str | None  # the version newscat last pointed it at (None: newscat never set it)

    def text(self) -> str:
        if self.recorded is None:
            return f"{self.alias} -> version {self.registry}: set outside newscat (no gate decision recorded)"
        if self.registry is None:
            return f"{self.alias}: removed outside newscat (newscat last pointed it at version {self.recorded})"
        return (
            f"{self.alias} -> version {self.registry}: moved outside newscat "
            f"(newscat last pointed it at version {self.recorded})"
        )


@dataclass(frozen=True)
class AuditReport:
    """The registered model's aliases against newscat's record, and the recorded moves."""

    name: str
    aliases: dict[str, str]
    findings: list[AliasFinding]
    history: list[dict]

    def text(self) -> str:
        lines = [f"registered model {self.name}: {len(self.aliases)} alias(es)"]
        lines += [f"  {alias} -> version {version}" for alias, version in sorted(self.aliases.items())]
        if self.findings:
            lines.append(f"{len(self.findings)} alias move(s) newscat did not make:")
            lines += [f"  {finding.text()}" for finding in self.findings]
        else:
            lines.append("every alias is where newscat's recorded moves put it")
        lines.append(f"last recorded moves ({len(self.history)}):")
        lines += [
            f"  {m['at']} {m['alias']}: {m.get('from') or '-'} -> {m['version']} by {m['by']}: {m['reason']}"
            for m in self.history[-5:]
        ]
        return "\n".join(lines)


def audit(name: str) -> AuditReport:
    """Compare `name`'s aliases in the registry with the aliases newscat recorded setting."""
    model = MlflowClient().get_registered_model(name)
    actual = {alias: str(version) for alias, version in (model.aliases or {}).items()}
    recorded = recorded_aliases(model)
    findings = [
        AliasFinding(alias, actual.get(alias), recorded.get(alias))
        for alias in sorted(set(actual) | set(recorded))
        if actual.get(alias) != recorded.get(alias)
    ]
    return AuditReport(name, actual, findings, alias_history(name))
