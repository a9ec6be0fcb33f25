"""Frontend side of the plugin: runs where vLLM processes multimodal inputs (the API
server or `LLM` process), before the engine core.

Per request, `mm_processor_kwargs={"sharp": {...}}` carries the settings. Here they are
merged with the engine-wide defaults, validated (before any media work), and turned into
per-video fields that travel with the item to `embed_multimodal`:

- `sharp_item`: JSON (as uint8) with the settings, the item's mm_hash, N and k;
- `sharp_prefix_ids` / `sharp_suffix_ids`: the prompt text around the video;
- `sharp_black_pixels`: one patch row of an all-black frame, as this model's processor
  normalises it (the worker builds the black-video prior from it).

Every field is a pure function of the item's mm_hash, and the hash covers exactly what
changes the selection, so the processor, encoder and prefix caches can never serve a
stale selection (see `item_identity`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import cached_property
from typing import Any

import torch
from vllm.logger import init_logger
from vllm.multimodal.hasher import MultiModalHasher
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.processing import PromptReplacement

from sharp_plugin.core import NO_PRUNING, SharpSettings, kept_count, parse_settings
from sharp_plugin.core.budget import fitting_retention
from sharp_plugin.core.settings import MAX_VIDEO_TOKENS, SharpSettingsError

from .reports import FRONTEND_RECORDS

logger = init_logger(__name__)

SHARP_KWARG = "sharp"
# Keys of the request's `sharp` dict that are not settings and never change a selection.
REPORT_ID_KEY = "report_id"
# Private keys this module adds to the `sharp` dict on its way through vLLM.
_ITEMS, _HASHES, _SETTINGS = "_items", "_hashes", "_settings"
# Per video: the hash of its pixels and processing kwargs alone, without the selection's
# identity (the question). The worker's vision-tower cache is keyed by it.
_CONTENT = "_content"
# Marks vLLM's memory-profiling dummy inputs. Its value is a secret of this process, so
# a request cannot pass itself off as a profiling run.
PROFILE_KEY = "_profile"
_PROFILE_TOKEN = secrets.token_hex(16)

# The question the `prior_query: generic` prior is scored with: neutral, and short like a
# typical question, so that the query rows sit where a real question's do.
GENERIC_QUESTION = "What happens in this video?"

ITEM_FIELDS = ("sharp_item", "sharp_prefix_ids", "sharp_suffix_ids", "sharp_black_pixels")
# Per image: its cache hash (a JSON row), so a later video's scoring pass can find it.
IMAGE_HASH_FIELD = "sharp_image_hash"


def strip_sharp(kwargs: Mapping[str, object]) -> dict[str, object]:
    """Never let `sharp` reach Hugging Face: every distinct value builds another cached
    HF processor, and a list inside it crashes that cache (unhashable type: 'list')."""
    return {k: v for k, v in kwargs.items() if k != SHARP_KWARG}


def item_identity(
    settings: SharpSettings, prefix: Sequence[int], suffix: Sequence[int], context: Sequence[str] = ()
) -> dict:
    """What the selection of one video depends on, besides its pixels.

    Only the scoring methods read the prompt text; `none` and retention 1.0 keep
    everything, so those items share cache entries with each other and across questions.
    """
    if not settings.prunes:
        return {}
    identity: dict[str, Any] = {"settings": settings.effective().model_dump()}
    if settings.needs_scoring_pass:
        identity["prefix"] = list(prefix)
        identity["suffix"] = list(suffix)
        if context:
            identity["context"] = list(context)
    return identity


def _earlier_hashes(
    order: list[str], video_index: int, image_hashes: list[str], video_hashes: list[str]
) -> list[str]:
    """Cache hashes of the media items before the `video_index`-th video, in prompt order
    (earlier videos by their ShaRP hash, which `video_hashes` holds so far)."""
    seen = {"image": 0, "video": 0}
    context = []
    for kind in order:
        if kind == "video" and seen["video"] == video_index:
            break
        hashes = image_hashes if kind == "image" else video_hashes
        if seen[kind] < len(hashes):
            context.append(hashes[seen[kind]])
        seen[kind] += 1
    return context


def _media_as_slots(tokens: Sequence[int], media: set[int], expanded: bool = True) -> list[int]:
    """The tokens with each media item as a single slot token: each run of one media
    placeholder collapsed when the prompt's placeholders are `expanded` (one token per
    embedding), else the tokens as they are (one token per item: LLaVA's template puts
    two videos side by side, `<video><video>`)."""
    if not expanded:
        return list(tokens)
    return [t for i, t in enumerate(tokens) if t not in media or i == 0 or tokens[i - 1] != t]


def canonical_settings(settings: SharpSettings) -> SharpSettings:
    """Items that prune nothing all carry the same settings, so identical pixels give
    identical fields whatever else the request said."""
    return settings if settings.prunes else NO_PRUNING


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

    # Media token ids: Qwen configs name them `*_token_id`, LLaVA's `*_token_index`.
    @property
    def sharp_video_token_id(self) -> int:
        return media_token_id(self.get_hf_config(), "video")

    @property
    def sharp_image_token_id(self) -> int:
        return media_token_id(self.get_hf_config(), "image")

    @property
    def sharp_vision_start_token_id(self) -> int | None:
        """The token that opens a media item in the prompt (Qwen's `<|vision_start|>`), or
        None in families whose media stand alone."""
        return getattr(self.get_hf_config(), "vision_start_token_id", None)

    @property
    def sharp_vision_end_token_id(self) -> int | None:
        return getattr(self.get_hf_config(), "vision_end_token_id", None)


class SharpProcessorMixin:
    """Mix in before the family's multimodal processor. The family implements the
    `_sharp_*` hooks below: how many visual tokens each processed video has, how many
    images were processed, and one all-black input row for the black-video prior."""

    # Embeddings a video puts in the prompt besides its visual tokens, never pruned
    # (LLaVA-OneVision's newline after the video).
    sharp_video_extra_embeds = 0

    def _sharp_video_text_rows(self, item) -> int:
        """Rows a processed video (`item`: its MultiModalKwargsItem) puts in the prompt
        besides its visual tokens, never pruned: `sharp_video_extra_embeds` unless the
        count depends on the video (Qwen3-VL's timestamp text)."""
        return self.sharp_video_extra_embeds

    def _sharp_video_token_counts(self, processed) -> list[int] | None:
        """Visual tokens (the ones selection chooses from) of each processed video, or
        None when there are no videos."""
        raise NotImplementedError

    def _sharp_num_images(self, processed) -> int:
        raise NotImplementedError

    def _sharp_black_pixels(self) -> torch.Tensor:
        """What the worker needs to embed an all-black video of any size (one patch
        row, or one frame), as this model's processor normalises it."""
        raise NotImplementedError

    # ---- request settings and the text around each video -------------------------
    def get_dummy_inputs(self, *args, **kwargs):
        """Memory profiling must see the largest placeholder count, so dummy inputs
        never prune, whatever the engine-wide defaults say. They are marked so that the
        model runs (and discards) a full selection over them: the profile then also
        reserves the selection's scratch memory (SharpModelMixin._profile_selection)."""
        inputs = super().get_dummy_inputs(*args, **kwargs)
        dummy = {"method": "none", PROFILE_KEY: _PROFILE_TOKEN}
        return replace(inputs, hf_processor_mm_kwargs={**inputs.hf_processor_mm_kwargs, SHARP_KWARG: dummy})

    def apply(self, inputs, timing_ctx):
        request = inputs.hf_processor_mm_kwargs.get(SHARP_KWARG)
        if request is not None and not isinstance(request, Mapping):
            raise SharpSettingsError("sharp: must be an object", field=None)
        request = dict(request or {})
        report_id = request.pop(REPORT_ID_KEY, None)
        if report_id is not None and not isinstance(report_id, str):
            raise SharpSettingsError("sharp.report_id: must be a string", field="report_id")
        profiling = PROFILE_KEY in request and request.pop(PROFILE_KEY) == _PROFILE_TOKEN
        settings = parse_settings(
            request,
            self.info.get_sharp_defaults(),
            num_decoder_layers=self.info.get_num_decoder_layers(),
        )
        items = self._split_prompt(list(inputs.prompt), self._placeholders_expanded(inputs))
        if settings.needs_scoring_pass:
            for item in items:
                if not item["has_question"]:
                    raise SharpSettingsError(
                        f"sharp.method: {settings.method!r} scores a video by the user's "
                        "text after it (or before it, when there is none after), and this "
                        "prompt has no user text around a video",
                        field="method",
                    )
        sharp = {_SETTINGS: canonical_settings(settings).model_dump(), _ITEMS: items, PROFILE_KEY: profiling}
        inputs = replace(inputs, hf_processor_mm_kwargs={**inputs.hf_processor_mm_kwargs, SHARP_KWARG: sharp})
        sharp[_CONTENT], sharp[_HASHES], contexts = self._hash_items(inputs, sharp)  # once; reused
        # One context per video of the data; a prompt whose placeholders do not match the
        # data is vLLM's to refuse, so a length mismatch is not an error here.
        for item, context in zip(items, contexts, strict=False):
            item["context"] = context
        result = super().apply(inputs, timing_ctx)
        self._check_the_pruned_prompt_fits(result)
        if report_id is not None:
            FRONTEND_RECORDS.put(report_id, self._frontend_record(settings, sharp[_HASHES]))
        return result

    def _check_the_pruned_prompt_fits(self, result) -> None:
        """A prompt over the context is refused by vLLM after this, with a message that
        says nothing about pruning. Only the kept tokens count against the context (the
        unpruned ones pass through the tower and the scoring pass, never the KV cache),
        so say which retention would fit. Items the processor cache elided carry no
        counts: vLLM's own refusal then stands."""
        max_len = self.info.ctx.model_config.max_model_len
        length = len(result["prompt_token_ids"])
        if length <= max_len:
            return
        videos = result["mm_kwargs"].get("video", [])
        if not videos or any(item is None or "sharp_item" not in item for item in videos):
            return
        rows = [read_item(item["sharp_item"].data) for item in videos]
        tokens, kept = [row["num_tokens"] for row in rows], sum(row["num_kept"] for row in rows)
        other = length - kept
        fits = fitting_retention(other, tokens, max_len - 1)  # room for one generated token
        said = (
            f"sharp.retention: the prompt is {length} tokens, over max_model_len {max_len}: "
            f"{kept} of its videos' {sum(tokens)} visual tokens kept, and {other} other tokens"
        )
        if fits is None:
            raise SharpSettingsError(
                f"{said}; no retention fits (one token per video would not)", "retention"
            )
        raise SharpSettingsError(f"{said}; retention {fits} or lower fits", "retention")

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

    def _split_prompt(self, prompt: list[int], expanded: bool = True) -> list[dict[str, Any]]:
        """Per video placeholder: the scoring pass's prompt before it (earlier media as slot
        tokens) and after it (later media dropped), and where its query rows start.

        The query rule (docs/method.md, "Query rows"): the query is the user's text
        after the video, in the same turn; when there is none, the user's text before
        it in that turn, repeated right after the video (the scoring pass is our own, so
        the question can stand after the video there while the real prompt keeps it
        before). Query rows never consist of chat-template tokens alone: a prompt with
        no user text around the video has `has_question` False. Each earlier media item
        stays in the prefix as one slot token (its placeholder id), which the worker
        fills with that item's embeddings (docs/method.md, "Earlier media").
        """
        video_token = self.info.sharp_video_token_id
        media = {video_token, self.info.sharp_image_token_id}
        vision_end = self.info.sharp_vision_end_token_id
        items, index = [], 0
        while index < len(prompt):
            if prompt[index] != video_token:
                index += 1
                continue
            stop = index + 1
            while expanded and stop < len(prompt) and prompt[stop] == video_token:
                stop += 1  # an already expanded placeholder run is one item
            prefix = _media_as_slots(prompt[:index], media, expanded)
            suffix = [t for t in prompt[stop:] if t not in media]
            query_from = 1 if suffix and vision_end is not None and suffix[0] == vision_end else 0
            asked_after = self._is_text(self._turn_text_after(suffix[query_from:]))
            before = self._turn_text_before(prefix)
            asked_before = self._is_text(before)
            if asked_before and not asked_after:
                question = [t for t in before if t not in media]
                suffix = suffix[:query_from] + question + suffix[query_from:]
            has_question = asked_after or asked_before
            items.append(
                {"prefix": prefix, "suffix": suffix, "query_from": query_from, "has_question": has_question}
            )
            index = stop
        return items

    @cached_property
    def _turn_markers(self) -> tuple[int | None, int | None]:
        """Token ids that open and close a chat turn (`<|im_start|>`, `<|im_end|>` in the
        Qwen-style templates every supported family uses), or None without them."""
        tokenizer = self.info.get_tokenizer()
        ids = [tokenizer.convert_tokens_to_ids(token) for token in ("<|im_start|>", "<|im_end|>")]
        unknown = tokenizer.unk_token_id
        return tuple(None if i is None or i == unknown else i for i in ids)  # type: ignore[return-value]

    def _turn_text_after(self, tokens: list[int]) -> list[int]:
        """The tokens after a video up to the end of its turn (all of them in a prompt
        without turn markers)."""
        _, turn_end = self._turn_markers
        return tokens[: tokens.index(turn_end)] if turn_end in tokens else tokens

    def _turn_text_before(self, prefix: list[int]) -> list[int]:
        """The user's text before a video in its turn: after the turn's role line, up to
        the video's vision-start token. Empty without turn markers (the whole prefix of
        a raw prompt is not known to be the question)."""
        turn_start, _ = self._turn_markers
        if turn_start is None or turn_start not in prefix:
            return []
        opened = len(prefix) - prefix[::-1].index(turn_start)  # just after the last turn start
        tokenizer = self.info.get_tokenizer()
        body = prefix[opened:]
        newline = next((i for i, t in enumerate(body) if "\n" in tokenizer.decode([t])), None)
        body = body[newline + 1 :] if newline is not None else []  # skip the role line
        vision_start = self.info.sharp_vision_start_token_id
        if body and vision_start is not None and body[-1] == vision_start:
            body = body[:-1]
        return body

    def _is_text(self, tokens: list[int]) -> bool:
        text = self.info.get_tokenizer().decode(tokens, skip_special_tokens=True) if tokens else ""
        return bool(text.strip())

    # ---- caches: the hash covers what changes the selection ------------------------
    def _get_mm_hashes(self, inputs):
        sharp = inputs.hf_processor_mm_kwargs.get(SHARP_KWARG)
        if sharp is None:
            return super()._get_mm_hashes(inputs)
        if _HASHES in sharp:
            return {modality: list(h) for modality, h in sharp[_HASHES].items()}
        return self._hash_items(inputs, sharp)[1]

    def _hash_items(self, inputs, sharp) -> tuple[list[str], dict, list[list[str]]]:
        """(each video's content hash, the hashes vLLM's caches key items by, each video's
        context: the cache hashes of the media items before it, in prompt order).

        Content hashes cover the pixels, the other kwargs and media_io_kwargs, without
        `sharp`: images pass through untouched, so their cache entries stay shared across
        settings. A pruned video's cache key adds what its selection depends on, the
        media before it included (the scoring pass sees them)."""
        hashes = super()._get_mm_hashes(
            replace(inputs, hf_processor_mm_kwargs=strip_sharp(inputs.hf_processor_mm_kwargs))
        )
        content = list(hashes.get("video", []))
        settings = SharpSettings.model_validate(sharp[_SETTINGS])
        items = sharp[_ITEMS]
        algorithm = self.info.ctx.get_mm_config().mm_hasher_algorithm
        # "image" / "video" per item, in prompt order
        order = self._media_order(list(inputs.prompt), self._placeholders_expanded(inputs))
        image_hashes = list(hashes.get("image", []))
        video_hashes: list[str] = []
        contexts: list[list[str]] = []
        for index, content_hash in enumerate(content):
            item = items[index] if index < len(items) else {"prefix": [], "suffix": []}
            context = _earlier_hashes(order, index, image_hashes, video_hashes)
            identity = item_identity(settings, item["prefix"], item["suffix"], context)
            video_hashes.append(
                MultiModalHasher.hash_kwargs(algorithm, video=content_hash, sharp=identity)
                if identity
                else content_hash
            )
            contexts.append(context)
        if video_hashes:
            hashes["video"] = video_hashes
        return content, hashes, contexts

    def _media_order(self, prompt: list[int], expanded: bool = True) -> list[str]:
        """The modality of each media item of a prompt, in order."""
        kinds = {self.info.sharp_video_token_id: "video", self.info.sharp_image_token_id: "image"}
        return [kinds[t] for t in _media_as_slots(prompt, set(kinds), expanded) if t in kinds]

    def _get_cache_missing_processor_kwargs(self, inputs, mm_is_cached):
        kwargs = dict(super()._get_cache_missing_processor_kwargs(inputs, mm_is_cached))
        sharp = kwargs.get(SHARP_KWARG)
        if sharp is None:
            return kwargs
        missing = [i for i, cached in enumerate(mm_is_cached.get("video", [])) if not cached]
        sharp = dict(sharp)
        sharp[_ITEMS] = [sharp[_ITEMS][i] for i in missing]
        sharp[_CONTENT] = [sharp[_CONTENT][i] for i in missing]
        missing_images = [i for i, cached in enumerate(mm_is_cached.get("image", [])) if not cached]
        sharp[_HASHES] = {
            **sharp[_HASHES],
            "video": [sharp[_HASHES]["video"][i] for i in missing],
            "image": [sharp[_HASHES]["image"][i] for i in missing_images],
        }
        kwargs[SHARP_KWARG] = sharp
        return kwargs

    # ---- HF call and per-item fields ----------------------------------------------
    def _call_hf_processor(self, hf_data, hf_kwargs):
        return super()._call_hf_processor(hf_data, strip_sharp(hf_kwargs))

    def _postprocess_hf_mm_data(self, mm_inputs, hf_processor_mm_kwargs, processed):
        processed = super()._postprocess_hf_mm_data(mm_inputs, hf_processor_mm_kwargs, processed)
        return self._add_sharp_fields(processed, hf_processor_mm_kwargs)

    def _add_sharp_fields(self, processed, hf_processor_mm_kwargs):
        """The per-item fields (see the module docstring) for the processed items."""
        num_images = self._sharp_num_images(processed)
        if num_images:
            # Each image's cache hash, so the worker can keep its embeddings for the
            # scoring pass of a video after it.
            image_hashes = (hf_processor_mm_kwargs.get(SHARP_KWARG) or {}).get(_HASHES, {}).get("image", [])
            processed[IMAGE_HASH_FIELD] = [
                _to_bytes_tensor({"mm_hash": image_hashes[i] if i < len(image_hashes) else None})
                for i in range(num_images)
            ]
        counts = self._sharp_video_token_counts(processed)
        if counts is None:
            return processed
        sharp = hf_processor_mm_kwargs.get(SHARP_KWARG) or {
            _SETTINGS: NO_PRUNING.model_dump(),
            _ITEMS: [],
            _HASHES: {},
        }
        settings = SharpSettings.model_validate(sharp[_SETTINGS])
        hashes = sharp.get(_HASHES, {}).get("video", [])
        content = sharp.get(_CONTENT, [])
        items = sharp[_ITEMS]
        rows, prefixes, suffixes = [], [], []
        generic_prior = settings.effective().debias == "black" and settings.prior_query == "generic"
        longest = int(getattr(self.info.get_hf_config(), "sharp_max_video_tokens", None) or 0)
        for index, num_tokens in enumerate(counts):
            if num_tokens > MAX_VIDEO_TOKENS:
                raise SharpSettingsError(
                    f"sharp: the video has {num_tokens} visual tokens, more than the {MAX_VIDEO_TOKENS} "
                    "this server selects from; send fewer frames or a lower resolution",
                    field=None,
                )
            if longest and num_tokens > longest and not sharp.get(PROFILE_KEY):
                raise SharpSettingsError(
                    f"sharp: the video has {num_tokens} unpruned visual tokens, more than the "
                    f"{longest} this engine reserved memory for (sharp_max_video_tokens); send "
                    "fewer frames or a lower resolution",
                    field=None,
                )
            if any(i >= num_tokens for i in settings.oracle_tokens):
                raise SharpSettingsError(
                    f"sharp.oracle_tokens: indices must be below the video's {num_tokens} tokens",
                    field="oracle_tokens",
                )
            item = items[index] if index < len(items) else {"prefix": [], "suffix": [], "query_from": 0}
            scoring = settings.needs_scoring_pass
            rows.append(
                {
                    "settings": settings.model_dump(),
                    "mm_hash": hashes[index] if index < len(hashes) else None,
                    "content_hash": content[index] if index < len(content) else None,
                    "num_tokens": num_tokens,
                    "num_kept": kept_count(settings.retention, num_tokens) if settings.prunes else num_tokens,
                    "query_from": item["query_from"] if scoring else 0,
                    "context": item.get("context", []) if scoring else [],
                    "prior": self._generic_prior_query if scoring and generic_prior else None,
                    PROFILE_KEY: bool(sharp.get(PROFILE_KEY)),
                }
            )
            prefixes.append(torch.tensor(item["prefix"] if scoring else [], dtype=torch.long))
            suffixes.append(torch.tensor(item["suffix"] if scoring else [], dtype=torch.long))
        processed["sharp_item"] = [_to_bytes_tensor(row) for row in rows]
        processed["sharp_prefix_ids"] = prefixes
        processed["sharp_suffix_ids"] = suffixes
        processed["sharp_black_pixels"] = [self._black_pixels] * len(rows)
        return processed

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs):
        config = dict(super()._get_mm_fields_config(hf_inputs, strip_sharp(hf_processor_mm_kwargs)))
        for name in ITEM_FIELDS:
            if name in hf_inputs:
                config[name] = MultiModalFieldConfig.batched("video", keep_on_cpu=True)
        if IMAGE_HASH_FIELD in hf_inputs:
            config[IMAGE_HASH_FIELD] = MultiModalFieldConfig.batched("image", keep_on_cpu=True)
        return config

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        stock = super()._get_prompt_updates(mm_items, strip_sharp(hf_processor_mm_kwargs), out_mm_kwargs)
        video_token = self.info.sharp_video_token_id
        # What the stock update replaces (Qwen3-VL's depends on the transformers version).
        target = next((u.target for u in stock if u.modality == "video"), [video_token])

        def kept_placeholders(item_idx: int) -> list[int]:
            # item_idx indexes out_mm_kwargs, which on the processor-cache path holds
            # the merged items, so the count comes from the item, not the request. One
            # run of placeholders, every row embedded by the model with its position.
            item = out_mm_kwargs["video"][item_idx]
            num_kept = read_item(item["sharp_item"].data)["num_kept"]
            return [video_token] * (num_kept + self._sharp_video_text_rows(item))

        return [u for u in stock if u.modality != "video"] + [
            PromptReplacement(modality="video", target=target, replacement=kept_placeholders)
        ]

    @cached_property
    def _black_pixels(self) -> torch.Tensor:
        return self._sharp_black_pixels()

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
        items = self._split_prompt(self.info.get_tokenizer().encode(text, add_special_tokens=False))
        if len(items) != 1 or len(items[0]["suffix"]) <= items[0]["query_from"]:
            raise SharpSettingsError(
                "sharp.prior_query: this model's chat template does not place a video before "
                "the question; send prior_query: 'question'",
                field="prior_query",
            )
        return items[0]

    # ---- the frontend half of the report -------------------------------------------
    def _frontend_record(self, settings, hashes) -> list[dict[str, Any]]:
        prune_layer = settings.prune_layer if settings.needs_scoring_pass else None
        return [
            {"mm_hash": h, "settings": settings.model_dump(), "prune_layer": prune_layer}
            for h in hashes.get("video", [])
        ]


def device_normalization_kwargs(info) -> dict[str, Any]:
    """`do_normalize` / `do_rescale` as vLLM passes them to the HF processor: off when the
    model normalises pixels on the device (`mm_device_do_normalize`), so that pixels made
    by the plugin itself (the black frame) reach the tower as the request's do."""
    merged = info.ctx.get_mm_config().merge_mm_processor_kwargs({})
    return {key: merged[key] for key in ("do_normalize", "do_rescale") if key in merged}


def media_token_id(config, modality: str) -> int:
    """The placeholder token of `modality` ("video" or "image") in a model's HF config."""
    value = getattr(config, f"{modality}_token_id", None)
    return value if value is not None else getattr(config, f"{modality}_token_index")


def _to_bytes_tensor(payload: dict) -> torch.Tensor:
    return torch.frombuffer(bytearray(json.dumps(payload, sort_keys=True).encode()), dtype=torch.uint8)


def read_item(tensor: torch.Tensor) -> dict[str, Any]:
    return json.loads(bytes(tensor.tolist()).decode())
