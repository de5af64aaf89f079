"""The shipped latency and error-rate rules fire when their 5-minute figure has held for 5 minutes
(5 evaluations, one a minute), as "p95 over 2 s for 5 minutes" says, instead of on the first minute
over. Rules an operator has changed are left as they are."""

from django.db import migrations

# name -> (threshold, description as shipped by 0003, description from now on)
RULES = {
    "p95 latency over 2000 ms": (
        2000.0,
        "p95 of all requests over the last 5 minutes, from the per-minute rollups.",
        "p95 of all requests over the last 5 minutes, from the per-minute rollups; fires when it has stayed "
        "over the threshold for 5 evaluations (5 minutes).",
    ),
    "error rate over 1 %": (
        1.0,
        "Share of requests answered 5xx over the last 5 minutes, in percent.",
        "Share of requests answered 5xx over the last 5 minutes, in percent; fires when it has stayed over "
        "the threshold for 5 evaluations (5 minutes).",
    ),
}


def _move(apps, *, to_five: bool) -> None:
    """Each rule still exactly as one side has it (hold and text) gets the other side's."""
    AlertRule = apps.get_model("monitoring", "AlertRule")
    for name, (threshold, shipped, description) in RULES.items():
        before, after = ((1, shipped), (5, description)) if to_five else ((5, description), (1, shipped))
        AlertRule.objects.filter(
            name=name, threshold=threshold, window_minutes=5, for_evaluations=before[0], description=before[1]
        ).update(for_evaluations=after[0], description=after[1])


def hold_five(apps, schema_editor):
    _move(apps, to_five=True)


def hold_one(apps, schema_editor):
    _move(apps, to_five=False)


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0006_endpoint_timeout_help")]
    operations = [migrations.RunPython(hold_five, hold_one)]
