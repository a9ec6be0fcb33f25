"""A scheduler whose encoder budget counts the encoder's work, not the prompt's tokens.

vLLM's scheduler charges each multimodal item its placeholder count against the
per-step encoder compute budget. With pruning, that is the *kept* count, while the
vision tower and the scoring pass run over every unpruned token: at r = 0.1 a step
could take ten times the encoder work the budget was sized for, and every running
stream waits for that step. vLLM says as much where it encodes pruned videos one at a
time ("scheduler uses pruned vision tokens count to compare it versus compute budget
which is incorrect", gpu_model_runner._execute_mm_encoder).

This scheduler charges a ShaRP video the tokens its tower makes (the item row's
`tower_tokens`: every token but those of the static groups it skips), so a step never
embeds more visual tokens than the budget, which vLLM sizes to at least the largest
item its memory profile ran. One item larger than the whole budget
may still run alone in a step, so no request can starve. The encoder *cache* still
holds kept embeddings and is still charged the kept count.

Use: `--scheduler-cls sharp_plugin.vllm.scheduler.SharpScheduler` (our server sets it).
Listed in docs/patches.md: it overrides a private method of vLLM's scheduler.
"""

from __future__ import annotations

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler

from .bounded_store import BoundedStore
from .item_fields import ITEM_ROW, ItemRow

# Unpruned counts by item identifier (mm_hash): a waiting request is re-examined at
# every step, and reading the count parses the item's JSON row.
_COUNT_CACHE_ENTRIES = 4096


class _EncoderWorkBudget:
    """Mixed in before vLLM's Scheduler or AsyncScheduler."""

    max_num_encoder_input_tokens: int

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sharp_unpruned_counts: BoundedStore[int] = BoundedStore(_COUNT_CACHE_ENTRIES)

    def _try_schedule_encoder_inputs(
        self,
        request,
        num_computed_tokens: int,
        num_new_tokens: int,
        encoder_compute_budget: int,
        shift_computed_tokens: int = 0,
    ) -> tuple[list[int], int, int, list[int], list[int]]:
        nothing_scheduled_yet = encoder_compute_budget == self.max_num_encoder_input_tokens
        scheduled, num_new_tokens, budget, external, duplicates = super()._try_schedule_encoder_inputs(  # type: ignore[misc]
            request, num_computed_tokens, num_new_tokens, encoder_compute_budget, shift_computed_tokens
        )
        # vLLM charged each scheduled item its kept count; charge the rest of its work.
        for position, input_id in enumerate(scheduled):
            feature = request.mm_features[input_id]
            kept = feature.mm_position.get_num_embeds()
            remaining = self._unpruned_count(feature) - kept
            alone = nothing_scheduled_yet and position == 0
            if remaining <= budget or alone:
                budget = max(0, budget - remaining)
                continue
            # Over budget: stop before this item, as vLLM does when its own check fails.
            budget += sum(request.mm_features[i].mm_position.get_num_embeds() for i in scheduled[position:])
            start = feature.mm_position.offset
            computed = num_computed_tokens + shift_computed_tokens
            num_new_tokens = min(num_new_tokens, max(0, start - computed))
            scheduled = scheduled[:position]
            external = [i for i in external if i < input_id]
            duplicates = [i for i in duplicates if i < input_id]
            break
        return scheduled, num_new_tokens, budget, external, duplicates

    def _unpruned_count(self, feature) -> int:
        """Visual tokens the encoder computes for this item: the ShaRP item row's count
        (less the static groups the tower skips), or the placeholder count for anything
        else (images, unpruned models)."""
        count = self._sharp_unpruned_counts.get(feature.identifier)
        if count is None:
            data = feature.data
            row = data.get(ITEM_ROW) if data is not None else None
            if row is not None:
                count = ItemRow.from_tensor(row.data).tower_tokens
            else:
                count = feature.mm_position.get_num_embeds()
            self._sharp_unpruned_counts.put(feature.identifier, count)
        return count


def bounds_unpruned_work(scheduler_cls: type) -> bool:
    """Whether a scheduler class charges encoder work by unpruned tokens (ours, or a
    subclass of it)."""
    return isinstance(scheduler_cls, type) and issubclass(scheduler_cls, _EncoderWorkBudget)


class _SharpSyncScheduler(_EncoderWorkBudget, Scheduler):
    pass


class _SharpAsyncScheduler(_EncoderWorkBudget, AsyncScheduler):
    pass


class SharpScheduler:
    """The name `--scheduler-cls` takes. vLLM uses AsyncScheduler when async scheduling
    is on and Scheduler otherwise; a custom class has to pick its base the same way
    (vLLM warns that a Scheduler subclass under async scheduling degrades performance),
    so this returns the variant that matches the engine's config."""

    def __new__(cls, *args, vllm_config, **kwargs):
        asynchronous = vllm_config.scheduler_config.async_scheduling
        variant = _SharpAsyncScheduler if asynchronous else _SharpSyncScheduler
        return variant(*args, vllm_config=vllm_config, **kwargs)
