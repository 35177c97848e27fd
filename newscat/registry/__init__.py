"""Model Registry: versions and their typed tags, aliases and their history, the champion/challenger gate and
promotion."""

from newscat.faces import face

# What other packages may use, by the module that defines it.
__all__, __getattr__ = face(
    __name__,
    {
        "audit": ("audit",),
        "evaluations": ("check_uri", "evaluate_uri", "evaluation_data", "verify_test_split"),
        "gate": ("GateDecision",),
        "promotion": ("AlreadyHeld", "earlier_gate", "promote_with_gate"),
        "tags": ("VersionTags",),
        "versions": (
            "append_description",
            "find_version",
            "finish_registration",
            "register_version",
            "rollback",
            "set_version_tags",
            "version_by_alias",
            "version_by_number",
            "version_model_id",
        ),
    },
)
