"""The frontend side of the plugin: vLLM's multimodal processor hooks, where a request's
media are processed (the API server or `LLM` process), before the engine core.

Per request, `mm_processor_kwargs={"sharp": {...}}` carries the settings. Here they are
merged with the engine-wide defaults and validated (request_checks.py, before any media
work), the text around each video is found (query_rows.py), each video gets its cache
identity (item_identity.py) and the per-video fields of the wire format
(item_fields.py), and the prompt gets the kept count of placeholders.

A family mixes `SharpProcessorMixin` in before its stock processor and implements the
hooks of `SharpProcessorFamily` (family.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import cached_property
from typing import Any

import torch
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.processing import PromptReplacement

from sharp_plugin.core import NO_PRUNING, SharpSettings, parse_settings
from sharp_plugin.core.redundancy import VideoChange, measure_change, video_budget
from sharp_plugin.core.settings import SharpSettingsError

from . import item_fields as wire
from . import request_checks
from .family import SharpProcessorFamily, media_token_id
from .item_identity import canonical_settings, video_cache_hashes
from .query_rows import PromptTokens, media_as_slots, split_prompt
from .reports import FRONTEND_RECORDS, frontend_record

# The question the `prior_query: generic` prior is scored with: neutral, and short like a
# typical question, so that the query rows sit where a real question's do.
GENERIC_QUESTION = "What happens in this video?"


def strip_sharp(kwargs: Mapping[str, object]) -> dict[str, object]:
    """Never let `sharp` reach Hugging Face: every distinct value builds another cached
    HF processor, and a list inside it crashes that cache (unhashable type: 'list')."""
    return {k: v for k, v in kwargs.items() if k != wire.SHARP_KWARG}


class SharpProcessingInfoMixin:
    """Mix in before the family's ProcessingInfo."""

    def get_hf_processor(self, **kwargs: object):
        return super().get_hf_processor(**strip_sharp(kwargs))

    def get_sharp_defaults(self) -> dict[str, Any]:
        """Engine-wide defaults: `sharp_defaults` in the HF config (config.json, or
        `--hf-overrides '{"sharp_defaults": {...}}'`). Per-request values win."""
        return dict(getattr(self.get_hf_config(), "sharp_defaults", None) or {})

    def get_num_decoder_layers(self) -> int:
        return int(self.get_hf_config().get_text_config().num_hidden_layers)

    @property
    def sharp_video_token_id(self) -> int:
        return media_token_id(self.get_hf_config(), "video")

    @property
    def sharp_image_token_id(self) -> int:
        return media_token_id(self.get_hf_config(), "image")

    @cached_property
    def sharp_prompt_tokens(self) -> PromptTokens:
        """The token ids the query rule reads (query_rows.py)."""
        config, tokenizer = self.get_hf_config(), self.get_tokenizer()
        turn = [tokenizer.convert_tokens_to_ids(token) for token in ("<|im_start|>", "<|im_end|>")]
        unknown = tokenizer.unk_token_id
        turn_start, turn_end = (None if i is None or i == unknown else i for i in turn)
        return PromptTokens(
            video=self.sharp_video_token_id,
            image=self.sharp_image_token_id,
            vision_start=getattr(config, "vision_start_token_id", None),
            vision_end=getattr(config, "vision_end_token_id", None),
            turn_start=turn_start,
            turn_end=turn_end,
            decode=tokenizer.decode,
        )


class SharpProcessorMixin(SharpProcessorFamily):
    """Mix in before the family's multimodal processor."""

    def get_dummy_inputs(self, *args, **kwargs):
        """Memory profiling must see the largest placeholder count, so dummy inputs never
        prune, whatever the engine-wide defaults say. They are marked, so that the model
        runs (and discards) a full selection over them: the profile then also reserves
        the selection's scratch memory (memory_profile.py)."""
        inputs = super().get_dummy_inputs(*args, **kwargs)
        dummy = {"method": "none", wire.PROFILE_KEY: wire.PROFILE_TOKEN}
        return replace(
            inputs, hf_processor_mm_kwargs={**inputs.hf_processor_mm_kwargs, wire.SHARP_KWARG: dummy}
        )

    # ---- the request: settings, the text around each video, identities --------------
    def apply(self, inputs, timing_ctx):
        request = inputs.hf_processor_mm_kwargs.get(wire.SHARP_KWARG)
        if request is not None and not isinstance(request, Mapping):
            raise SharpSettingsError("sharp: must be an object", field=None)
        request = dict(request or {})
        report_id = request.pop(wire.REPORT_ID_KEY, None)
        if report_id is not None and not isinstance(report_id, str):
            raise SharpSettingsError("sharp.report_id: must be a string", field="report_id")
        profiling = wire.PROFILE_KEY in request and request.pop(wire.PROFILE_KEY) == wire.PROFILE_TOKEN
        settings = parse_settings(
            request, self.info.get_sharp_defaults(), num_decoder_layers=self.info.get_num_decoder_layers()
        )
        expanded = self._placeholders_expanded(inputs)
        items = split_prompt(list(inputs.prompt), self.info.sharp_prompt_tokens, expanded)
        request_checks.check_questions(settings, items)
        sharp = {
            wire.SETTINGS_KEY: canonical_settings(settings).model_dump(),
            wire.ITEMS_KEY: items,
            wire.PROFILE_KEY: profiling,
        }
        inputs = replace(
            inputs, hf_processor_mm_kwargs={**inputs.hf_processor_mm_kwargs, wire.SHARP_KWARG: sharp}
        )
        sharp[wire.CONTENT_KEY], sharp[wire.HASHES_KEY], contexts = self._hash_items(inputs, sharp)  # once
        # One context per video of the data; a prompt whose placeholders do not match the
        # data is vLLM's to refuse, so a length mismatch is not an error here.
        for item, context in zip(items, contexts, strict=False):
            item["context"] = context
        result = super().apply(inputs, timing_ctx)
        self._check_the_pruned_prompt_fits(result)
        if report_id is not None:
            hashes = sharp[wire.HASHES_KEY].get("video", [])
            FRONTEND_RECORDS.put(report_id, [frontend_record(h, settings) for h in hashes])
        return result

    def _check_the_pruned_prompt_fits(self, result) -> None:
        """Items the processor cache elided carry no counts: vLLM's own refusal stands."""
        videos = result["mm_kwargs"].get("video", [])
        if not videos or any(item is None or wire.ITEM_ROW not in item for item in videos):
            return
        rows = [wire.ItemRow.from_tensor(item[wire.ITEM_ROW].data) for item in videos]
        request_checks.check_pruned_prompt_fits(
            len(result["prompt_token_ids"]),
            self.info.ctx.model_config.max_model_len,
            [row.video_tokens for row in rows],
            sum(row.video_tokens_kept for row in rows),
        )

    def _placeholders_expanded(self, inputs) -> bool:
        """Whether the prompt's media placeholders are already expanded to one token per
        embedding (a prompt of token ids can arrive so) rather than one token per item."""
        for modality, token in (
            ("video", self.info.sharp_video_token_id),
            ("image", self.info.sharp_image_token_id),
        ):
            count = inputs.mm_data_items.get_count(modality, strict=False)
            if count and inputs.prompt.count(token) != count:
                return True
        return False

    def _get_mm_hashes(self, inputs):
        sharp = inputs.hf_processor_mm_kwargs.get(wire.SHARP_KWARG)
        if sharp is None:
            return super()._get_mm_hashes(inputs)
        if wire.HASHES_KEY in sharp:
            return {modality: list(h) for modality, h in sharp[wire.HASHES_KEY].items()}
        return self._hash_items(inputs, sharp)[1]

    def _hash_items(self, inputs, sharp) -> tuple[list[str], dict, list[list[str]]]:
        """(each video's content hash, the hashes vLLM's caches key items by, each video's
        context). Content hashes cover the pixels, the other kwargs and media_io_kwargs,
        without `sharp`: images pass through untouched, so their cache entries stay
        shared across settings."""
        hashes = super()._get_mm_hashes(
            replace(inputs, hf_processor_mm_kwargs=strip_sharp(inputs.hf_processor_mm_kwargs))
        )
        content = list(hashes.get("video", []))
        tokens = self.info.sharp_prompt_tokens
        kinds = {tokens.video: "video", tokens.image: "image"}
        slots = media_as_slots(list(inputs.prompt), tokens.media, self._placeholders_expanded(inputs))
        video_hashes, contexts = video_cache_hashes(
            self.info.ctx.get_mm_config().mm_hasher_algorithm,
            content,
            SharpSettings.model_validate(sharp[wire.SETTINGS_KEY]),
            sharp[wire.ITEMS_KEY],
            [kinds[t] for t in slots if t in kinds],
            list(hashes.get("image", [])),
        )
        if video_hashes:
            hashes["video"] = video_hashes
        return content, hashes, contexts

    def _get_cache_missing_processor_kwargs(self, inputs, mm_is_cached):
        kwargs = dict(super()._get_cache_missing_processor_kwargs(inputs, mm_is_cached))
        sharp = kwargs.get(wire.SHARP_KWARG)
        if sharp is None:
            return kwargs
        missing = [i for i, cached in enumerate(mm_is_cached.get("video", [])) if not cached]
        missing_images = [i for i, cached in enumerate(mm_is_cached.get("image", [])) if not cached]
        sharp = dict(sharp)
        sharp[wire.ITEMS_KEY] = [sharp[wire.ITEMS_KEY][i] for i in missing]
        sharp[wire.CONTENT_KEY] = [sharp[wire.CONTENT_KEY][i] for i in missing]
        sharp[wire.HASHES_KEY] = {
            **sharp[wire.HASHES_KEY],
            "video": [sharp[wire.HASHES_KEY]["video"][i] for i in missing],
            "image": [sharp[wire.HASHES_KEY]["image"][i] for i in missing_images],
        }
        kwargs[wire.SHARP_KWARG] = sharp
        return kwargs

    # ---- the HF call and the per-item fields -------------------------------------------
    def _apply_hf_processor_main(self, mm_items, hf_kwargs):
        # Every family's vLLM processor calls the HF processor from here, with these
        # kwargs: `sharp` must not reach it (strip_sharp), and the fields need it after.
        processed = super()._apply_hf_processor_main(mm_items, strip_sharp(hf_kwargs))
        return self._add_sharp_fields(processed, hf_kwargs.get(wire.SHARP_KWARG))

    def _add_sharp_fields(self, processed, sharp: dict[str, Any] | None):
        """The per-item fields (item_fields.py) for the processed items."""
        sharp = sharp or {wire.SETTINGS_KEY: NO_PRUNING.model_dump(), wire.ITEMS_KEY: []}
        hashes = sharp.get(wire.HASHES_KEY, {})
        num_images = self.sharp_num_images(processed)
        if num_images:
            image_hashes = hashes.get("image", [])
            processed[wire.IMAGE_HASH] = [
                wire.image_hash_tensor(image_hashes[i] if i < len(image_hashes) else None)
                for i in range(num_images)
            ]
        counts = self.sharp_video_token_counts(processed)
        if counts is None:
            return processed
        settings = SharpSettings.model_validate(sharp[wire.SETTINGS_KEY])
        video_hashes, content, items = (
            hashes.get("video", []),
            sharp.get(wire.CONTENT_KEY, []),
            sharp[wire.ITEMS_KEY],
        )
        profiling = bool(sharp.get(wire.PROFILE_KEY))
        scoring = settings.needs_scoring_pass
        generic_prior = (
            scoring and settings.effective().debias == "black" and settings.prior_query == "generic"
        )
        reserved = int(getattr(self.info.get_hf_config(), "sharp_max_video_tokens", None) or 0)
        rows, prefixes, suffixes = [], [], []
        for index, num_tokens in enumerate(counts):
            request_checks.check_video(num_tokens, settings, reserved, profiling)
            item = items[index] if index < len(items) else {"prefix": [], "suffix": [], "query_from": 0}
            change = self._video_change(processed, index, settings) if not profiling else None
            item_settings, kept = video_budget(settings, num_tokens, change)
            row = wire.ItemRow(
                settings=item_settings.model_dump(),
                mm_hash=video_hashes[index] if index < len(video_hashes) else None,
                content_hash=content[index] if index < len(content) else None,
                video_tokens=num_tokens,
                video_tokens_kept=kept,
                skipped_groups=list(change.skipped_groups) if change is not None else [],
                redundancy=_redundancy_summary(change, settings),
                query_from=item["query_from"] if scoring else 0,
                context=item.get("context", []) if scoring else [],
                generic_prior_query=self._generic_prior_query if generic_prior else None,
                profiling=profiling,
            )
            rows.append(row.to_tensor())
            prefixes.append(torch.tensor(item["prefix"] if scoring else [], dtype=torch.long))
            suffixes.append(torch.tensor(item["suffix"] if scoring else [], dtype=torch.long))
        processed[wire.ITEM_ROW] = rows
        processed[wire.PREFIX_IDS] = prefixes
        processed[wire.SUFFIX_IDS] = suffixes
        processed[wire.BLACK_PIXELS] = [self._black_pixels] * len(rows)
        return processed

    def _video_change(self, processed, index: int, settings: SharpSettings) -> VideoChange | None:
        """The `index`-th video's change (core/redundancy.py), when the settings use it."""
        if not settings.measures_change:
            return None
        if processed.get("pixel_values_videos") is None:
            raise SharpSettingsError(
                "sharp.skip_static: skip_static and retention 'auto' measure a video's pixels, "
                "and this request sent precomputed embeddings",
                field="skip_static" if settings.skip_static else "retention",
            )
        means = self._unit_scale(self.sharp_token_means(processed, index))
        groups = means.shape[0]
        if any(group >= groups for group in settings.keep_groups):
            raise SharpSettingsError(
                f"sharp.keep_groups: indices must be below the video's {groups} temporal groups",
                field="keep_groups",
            )
        return measure_change(
            means,
            settings.change_threshold,
            skip_static=settings.skip_static,
            keep_groups=settings.keep_groups,
        )

    def _unit_scale(self, means: torch.Tensor) -> torch.Tensor:
        """Pixel values as the processor left them -> 0..1: undo the normalisation (or
        the missing rescale, when the device normalises)."""
        video_processor = self.info.get_hf_processor().video_processor
        flags = {
            "do_rescale": getattr(video_processor, "do_rescale", True),
            "do_normalize": getattr(video_processor, "do_normalize", True),
            **device_normalization_kwargs(self.info),
        }
        if flags["do_normalize"]:
            mean = torch.tensor(video_processor.image_mean, dtype=torch.float32)
            std = torch.tensor(video_processor.image_std, dtype=torch.float32)
            return means * std + mean
        if flags["do_rescale"]:
            return means
        return means * float(getattr(video_processor, "rescale_factor", 1 / 255))

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs):
        config = dict(super()._get_mm_fields_config(hf_inputs, strip_sharp(hf_processor_mm_kwargs)))
        for name in wire.VIDEO_FIELDS:
            if name in hf_inputs:
                config[name] = MultiModalFieldConfig.batched("video", keep_on_cpu=True)
        if wire.IMAGE_HASH in hf_inputs:
            config[wire.IMAGE_HASH] = MultiModalFieldConfig.batched("image", keep_on_cpu=True)
        return config

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        stock = super()._get_prompt_updates(mm_items, strip_sharp(hf_processor_mm_kwargs), out_mm_kwargs)
        video_token = self.info.sharp_video_token_id
        # What the stock update replaces (Qwen3-VL's depends on the transformers version).
        target = next((u.target for u in stock if u.modality == "video"), [video_token])

        def kept_placeholders(item_idx: int) -> list[int]:
            # item_idx indexes out_mm_kwargs, which on the processor-cache path holds the
            # merged items, so the count comes from the item, not the request. One run of
            # placeholders, every row embedded by the model with its position.
            item = out_mm_kwargs["video"][item_idx]
            kept = wire.ItemRow.from_tensor(item[wire.ITEM_ROW].data).video_tokens_kept
            return [video_token] * (kept + self.sharp_never_pruned_rows(item))

        return [u for u in stock if u.modality != "video"] + [
            PromptReplacement(modality="video", target=target, replacement=kept_placeholders)
        ]

    @cached_property
    def _black_pixels(self) -> torch.Tensor:
        return self.sharp_black_pixels()

    @cached_property
    def _generic_prior_query(self) -> dict[str, Any]:
        """Prefix, suffix and query_from of a one-video chat that asks GENERIC_QUESTION, in
        this model's own chat template: the text the `prior_query: generic` prior is
        scored with, the same for every request."""
        messages = [
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": GENERIC_QUESTION}]}
        ]
        try:
            text = self.info.get_hf_processor().apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        except ValueError as exc:  # no chat template
            raise SharpSettingsError(
                f"sharp.prior_query: 'generic' needs the model's chat template ({exc}); "
                "send prior_query: 'question'",
                field="prior_query",
            ) from exc
        ids = self.info.get_tokenizer().encode(text, add_special_tokens=False)
        items = split_prompt(ids, self.info.sharp_prompt_tokens)
        if len(items) != 1 or len(items[0]["suffix"]) <= items[0]["query_from"]:
            raise SharpSettingsError(
                "sharp.prior_query: this model's chat template does not place a video before "
                "the question; send prior_query: 'question'",
                field="prior_query",
            )
        return {key: items[0][key] for key in ("prefix", "suffix", "query_from")}


def _redundancy_summary(change: VideoChange | None, settings: SharpSettings) -> dict[str, Any] | None:
    """What the report says of the measured change (VideoReport.redundancy)."""
    if change is None:
        return None
    summary = {
        "groups": change.groups,
        "skipped_groups": list(change.skipped_groups),
        "novelty": round(change.novelty, 6),
        "new_tokens": change.new_tokens,
        "changed_per_group": list(change.changed_per_group),
        "threshold": round(change.threshold, 6),
        "noise_floor": round(change.noise_floor, 6),
    }
    if settings.retention == "auto":
        summary["retention_bounds"] = [settings.min_retention, settings.max_retention]
    return summary


def device_normalization_kwargs(info) -> dict[str, Any]:
    """`do_normalize` / `do_rescale` as vLLM passes them to the HF processor: off when the
    model normalises pixels on the device (`mm_device_do_normalize`), so that pixels made
    by the plugin itself (the black frame) reach the tower as the request's do."""
    merged = info.ctx.get_mm_config().merge_mm_processor_kwargs({})
    return {key: merged[key] for key in ("do_normalize", "do_rescale") if key in merged}
