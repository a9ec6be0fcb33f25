"""Per-request pruning on the real vLLM engine: counts, concurrency, reports, caches,
validation. N = 512 visual tokens per test video (grid 8 x 16 x 16 after merging)."""

import pytest

from sharp_plugin.core import kept_count

from ..media import chat_prompt, noise_image, noise_video
from .engine_helpers import cache_hashes, generate, new_report_id, report, request, video_pads

pytestmark = pytest.mark.engine

N = 512
QUESTION = chat_prompt("<video>", "What is shown?")


@pytest.fixture(scope="module")
def unpruned_length(sharp_llm):
    return len(generate(sharp_llm, request(QUESTION, {"video": noise_video(0)}))[0].prompt_token_ids)


def test_prompt_shrinks_by_exactly_n_minus_kept_for_concurrent_mixed_requests(sharp_llm, unpruned_length):
    tokenizer = sharp_llm.get_tokenizer()
    cases = [
        ("sharp", 0.05), ("sharp", 0.1), ("sharp", 0.25), ("fastv", 1 / 3),
        ("sharp", 0.5), ("uniform", 0.9), ("random", 0.3), ("fastv", 0.999),
    ]  # fmt: skip
    # One generate call: the engine batches all of them together.
    outputs = generate(
        sharp_llm,
        [
            request(QUESTION, {"video": noise_video(i)}, {"method": m, "retention": r})
            for i, (m, r) in enumerate(cases)
        ],
    )
    for (method, retention), output in zip(cases, outputs, strict=True):
        kept = kept_count(retention, N)
        assert video_pads(output, tokenizer) == kept, (method, retention)
        assert len(output.prompt_token_ids) == unpruned_length - (N - kept)


def test_each_video_of_a_request_is_pruned_with_its_own_count(sharp_llm):
    tokenizer = sharp_llm.get_tokenizer()
    prompt = chat_prompt("<video>", "First?", "<video>", "Second?")
    small = noise_video(5, frames=8, fps=2.0)  # grid 4 x 16 x 16 -> 256 tokens
    rid = new_report_id()
    (output,) = generate(
        sharp_llm,
        request(prompt, {"video": [noise_video(4), small]}, {"method": "sharp", "retention": 0.25}, rid),
    )
    assert video_pads(output, tokenizer) == kept_count(0.25, 512) + kept_count(0.25, 256)
    entries = report(sharp_llm, rid)
    assert [(e.video_tokens, e.video_tokens_kept) for e in entries] == [(512, 128), (256, 64)]


def test_each_video_selection_sees_the_media_before_it(sharp_llm):
    """With two videos, or an image then a video, a video's scoring pass has the earlier
    item in its context: changing only the earlier item changes the later selection
    (before, earlier media were dropped from the scoring pass and it could not)."""
    settings = {"method": "fastv", "retention": 0.25}
    later = noise_video(51)

    def later_selection(prompt, media, earlier_key):
        rid = new_report_id()
        generate(sharp_llm, request(prompt, {**media, earlier_key[0]: earlier_key[1]}, settings, rid))
        entries = report(sharp_llm, rid)
        assert entries[-1].context_missing == 0
        return entries[-1].selection.kept_indices

    two_videos = chat_prompt("<video>", "<video>", "What happens?")
    a, b = (later_selection(two_videos, {}, ("video", [noise_video(seed), later])) for seed in (52, 53))
    assert a != b
    image_first = chat_prompt("<image>", "<video>", "What happens?")
    a, b = (later_selection(image_first, {"video": later}, ("image", noise_image(seed))) for seed in (54, 55))
    assert a != b


def test_report_crosses_the_process_boundary(sharp_llm):
    rid_sharp, rid_uniform = new_report_id(), new_report_id()
    generate(
        sharp_llm,
        [
            request(
                QUESTION,
                {"video": noise_video(10)},
                {"method": "sharp", "retention": 0.25, "prune_layer": 1},
                rid_sharp,
            ),
            request(
                QUESTION, {"video": noise_video(11)}, {"method": "uniform", "retention": 0.1}, rid_uniform
            ),
        ],
    )
    (scored,) = report(sharp_llm, rid_sharp)
    assert scored.method == "sharp" and scored.prune_layer == 1
    assert (scored.video_tokens, scored.video_tokens_kept) == (512, 128)
    assert scored.scoring_ms > 0
    kept = scored.selection.kept_indices
    assert len(kept) == 128 and kept == sorted(set(kept)) and kept[0] >= 0 and kept[-1] < N
    (uniform,) = report(sharp_llm, rid_uniform)
    assert (uniform.video_tokens_kept, uniform.scoring_ms) == (kept_count(0.1, N), 0.0)


def test_same_video_new_question_gets_a_fresh_selection(sharp_llm):
    video = noise_video(20)
    settings = {"method": "sharp", "retention": 0.25}
    first, second = new_report_id(), new_report_id()
    generate(
        sharp_llm, request(chat_prompt("<video>", "What colour is it?"), {"video": video}, settings, first)
    )
    generate(sharp_llm, request(chat_prompt("<video>", "Who is there?"), {"video": video}, settings, second))
    (a,), (b,) = report(sharp_llm, first), report(sharp_llm, second)
    assert cache_hashes(first) != cache_hashes(second)
    assert b.selection_id != a.selection_id, "the second question must run its own selection"
    # Other settings on the same video and question: also a fresh selection.
    other = new_report_id()
    generate(
        sharp_llm,
        request(
            chat_prompt("<video>", "What colour is it?"),
            {"video": video},
            {**settings, "retention": 0.5},
            other,
        ),
    )
    (c,) = report(sharp_llm, other)
    assert cache_hashes(other)[0] not in cache_hashes(first) + cache_hashes(second)
    assert c.video_tokens_kept == 256


def test_query_rows_come_from_user_text_never_from_the_template_alone(sharp_llm):
    """A question before the video is the query (the reference test checks the exact
    rows); a prompt with no user text around the video is refused by field: scored by
    the chat template's tokens alone, its selection would not depend on any question."""
    video = noise_video(23)
    settings = {"method": "fastv", "retention": 0.25}
    rid = new_report_id()
    (output,) = generate(
        sharp_llm, request(chat_prompt("Who is there?", "<video>"), {"video": video}, settings, rid)
    )
    assert video_pads(output, sharp_llm.get_tokenizer()) == 128 and report(sharp_llm, rid)[0].scoring_ms > 0
    for prompt in (chat_prompt("<video>"), chat_prompt("<video>", " \n ")):
        with pytest.raises(ValueError, match=r"sharp\.method: .*no user text"):
            generate(sharp_llm, request(prompt, {"video": video}, settings))
    # Methods that read no text still work on such a prompt.
    (output,) = generate(
        sharp_llm, request(chat_prompt("<video>"), {"video": video}, {"method": "uniform", "retention": 0.25})
    )
    assert video_pads(output, sharp_llm.get_tokenizer()) == 128


def test_identical_requests_share_cached_work(sharp_llm):
    prompt, video = chat_prompt("<video>", "Count the objects."), noise_video(21)
    settings = {"method": "sharp", "retention": 0.25}
    first, second = new_report_id(), new_report_id()
    generate(sharp_llm, request(prompt, {"video": video}, settings, first))
    (output,) = generate(sharp_llm, request(prompt, {"video": video}, settings, second))
    (a,), (b,) = report(sharp_llm, first), report(sharp_llm, second)
    assert cache_hashes(first) == cache_hashes(second)
    assert b.selection_id == a.selection_id, "no second selection for an identical request"
    assert output.num_cached_tokens > 0, "the prefix cache should serve the pruned prompt"


def test_images_pass_through_untouched(sharp_llm, stock_llm):
    tokenizer = sharp_llm.get_tokenizer()
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    prompt = chat_prompt("<image>", "<video>", "Describe both.")
    media = {"image": noise_image(3), "video": noise_video(22)}
    (pruned,) = generate(sharp_llm, request(prompt, media, {"method": "sharp", "retention": 0.1}))
    (stock,) = generate(stock_llm, request(prompt, media))
    assert pruned.prompt_token_ids.count(image_pad) == stock.prompt_token_ids.count(image_pad) > 0
    assert video_pads(pruned, tokenizer) == kept_count(0.1, N)


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"retention": 0}, "retention"),
        ({"retention": 1.5}, "retention"),
        ({"method": "magic"}, "method"),
        ({"method": "sharp", "retention": 0.5, "prune_layer": 4}, "prune_layer"),  # the model has 4
        ({"retention": "0.5"}, "retention"),
        ({"prune_layer": "2"}, "prune_layer"),
        ({"dedup_threshold": [0.9]}, "dedup_threshold"),
    ],
)
def test_invalid_settings_are_refused_by_field_and_the_engine_keeps_serving(sharp_llm, settings, field):
    with pytest.raises(ValueError, match=rf"sharp\.{field}:"):
        generate(sharp_llm, request(QUESTION, {"video": noise_video(30)}, settings))
    (output,) = generate(
        sharp_llm, request(QUESTION, {"video": noise_video(31)}, {"method": "uniform", "retention": 0.5})
    )
    assert video_pads(output, sharp_llm.get_tokenizer()) == 256


def test_the_generic_prior_is_shared_across_questions_and_the_question_prior_is_not(sharp_llm):
    # prune_layer 3 with 3-group segments: a prior cache key no other test uses.
    base = {"method": "sharp", "retention": 0.25, "prune_layer": 3, "segment_frames": 3}
    questions = ["What colour is it?", "How many objects move?", "Where does it end?"]

    def priors(prior_query: str, first_video: int) -> list[str]:
        statuses = []
        for offset, question in enumerate(questions):  # one at a time: each sees the cache as left
            rid = new_report_id()
            settings = {**base, "prior_query": prior_query}
            video = {"video": noise_video(first_video + offset)}
            generate(sharp_llm, request(chat_prompt("<video>", question), video, settings, rid))
            (entry,) = report(sharp_llm, rid)
            statuses.append(entry.prior)
        return statuses

    assert priors("generic", 60) == ["computed", "cached", "cached"]
    assert priors("question", 70) == ["computed", "computed", "computed"]


def _count_vision_tower_runs(worker) -> None:
    model = worker.model_runner.model
    original = type(model)._process_video_input
    model._test_tower_runs = 0

    def counted(*args, **kwargs):
        model._test_tower_runs += 1
        return original(model, *args, **kwargs)

    model._process_video_input = counted


def _vision_tower_runs(worker) -> int:
    return worker.model_runner.model._test_tower_runs


def test_a_follow_up_question_on_a_known_video_skips_the_vision_tower(sharp_llm):
    sharp_llm.collective_rpc(_count_vision_tower_runs)
    video = {"video": noise_video(80)}
    settings = {"method": "sharp", "retention": 0.25}
    statuses, kept = [], []
    for question in ("What colour is it?", "How many objects move?", "Where does it end?"):
        rid = new_report_id()
        generate(sharp_llm, request(chat_prompt("<video>", question), video, settings, rid))
        (entry,) = report(sharp_llm, rid)
        statuses.append(entry.vision_cached)
        kept.append(entry.selection.kept_indices)
    (runs,) = sharp_llm.collective_rpc(_vision_tower_runs)
    assert statuses == [False, True, True]
    assert runs == 1, "the tower ran once, for the first question"
    assert len({tuple(k) for k in kept}) > 1, "each question still got its own selection"
    # A different video (same size) is not served from the cache.
    rid = new_report_id()
    generate(
        sharp_llm,
        request(chat_prompt("<video>", "What colour is it?"), {"video": noise_video(81)}, settings, rid),
    )
    assert report(sharp_llm, rid)[0].vision_cached is False
    assert sharp_llm.collective_rpc(_vision_tower_runs) == [2]


# ---- the encoder budget counts unpruned tokens (sharp_plugin/vllm/scheduler.py) -------------
def _record_encoder_work_per_step(worker) -> int:
    """Spy (calls through): the unpruned video tokens embedded at each engine step."""
    runner, model = worker.model_runner, worker.model_runner.model
    runner._test_steps = []
    if not hasattr(runner, "_test_original_execute"):
        runner._test_original_execute = runner.execute_model
        model._test_original_embed = model.embed_multimodal

        def execute_model(*args, **kwargs):
            runner._test_steps.append(0)
            return runner._test_original_execute(*args, **kwargs)

        def embed_multimodal(**kwargs):
            grids = kwargs.get("video_grid_thw")
            if grids is not None and runner._test_steps:
                merge = model.config.vision_config.spatial_merge_size
                runner._test_steps[-1] += int(grids.prod(-1).sum()) // (merge * merge)
            return model._test_original_embed(**kwargs)

        runner.execute_model = execute_model
        model.embed_multimodal = embed_multimodal
    return runner.mm_budget.encoder_compute_budget


def _encoder_work_per_step(worker) -> list[int]:
    return [tokens for tokens in worker.model_runner._test_steps if tokens]


def test_a_step_embeds_no_more_unpruned_tokens_than_the_encoder_budget(sharp_llm):
    """At r = 0.1 vLLM's own scheduler charges each video its kept count, so three videos
    whose kept counts fit the budget would all be embedded (vision tower and scoring pass
    over every unpruned token) in one step. Ours charges the unpruned count."""
    (budget,) = sharp_llm.collective_rpc(_record_encoder_work_per_step)
    tokens_per_frame_pair = 64  # 224^2 frames: a 16 x 16 grid of merged tokens per 2 frames
    frames = 2 * (budget // 2 // tokens_per_frame_pair + 1)  # just over half the budget
    unpruned = frames // 2 * tokens_per_frame_pair
    kept = kept_count(0.1, unpruned)
    assert 2 * unpruned > budget >= unpruned and 3 * kept <= budget, "videos sized against the budget"
    settings = {"method": "sharp", "retention": 0.1}
    videos = [{"video": noise_video(300 + i, frames=frames)} for i in range(3)]
    outputs = generate(sharp_llm, [request(QUESTION, video, settings) for video in videos])
    tokenizer = sharp_llm.get_tokenizer()
    assert [video_pads(o, tokenizer) for o in outputs] == [kept] * 3
    (work,) = sharp_llm.collective_rpc(_encoder_work_per_step)
    assert work == [unpruned] * 3, f"one video per step under a budget of {budget}: {work}"
