"""With nothing pruned, the ShaRP model must be the stock model: same greedy tokens and
the same prompt log-probabilities (which would move with any position error) on the
real vLLM engine."""

import math

import pytest

from tests.media import chat_prompt, noise_image, noise_video

pytestmark = pytest.mark.engine

CASES = {
    # fps 4: t positions 0..14. fps 0.1: 20 s per grid -> t up to 280, past bf16's
    # exact-integer range, which the position channels must survive.
    "one video": lambda: (chat_prompt("<video>", "What is shown?"), {"video": noise_video(0)}),
    "slow video": lambda: (chat_prompt("<video>", "What is shown?"), {"video": noise_video(1, fps=0.1)}),
    "image and two videos": lambda: (
        chat_prompt("<image>", "Look.", "<video>", "First?", "<video>", "Second?"),
        {"image": noise_image(2), "video": [noise_video(3), noise_video(4, frames=8, fps=2.0)]},
    ),
}


def _generate(llm, prompt, media, sharp=None):
    from vllm import SamplingParams

    request = {"prompt": prompt, "multi_modal_data": media}
    if sharp is not None:
        request["mm_processor_kwargs"] = {"sharp": sharp}
    params = SamplingParams(max_tokens=8, temperature=0.0, prompt_logprobs=0, seed=0)
    return llm.generate(request, params, use_tqdm=False)[0]


def _prompt_logprobs(output):
    return [next(iter(lp.values())).logprob for lp in output.prompt_logprobs[1:]]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("sharp", [None, {"method": "sharp", "retention": 1.0}], ids=["no-settings", "r=1.0"])
def test_unpruned_sharp_model_equals_stock(stock_llm, sharp_llm, case, sharp):
    prompt, media = CASES[case]()
    stock = _generate(stock_llm, prompt, media)
    ours = _generate(sharp_llm, prompt, media, sharp)
    assert ours.prompt_token_ids == stock.prompt_token_ids
    assert ours.outputs[0].token_ids == stock.outputs[0].token_ids
    stock_lp, ours_lp = _prompt_logprobs(stock), _prompt_logprobs(ours)
    assert len(stock_lp) == len(ours_lp)
    worst = max(abs(a - b) for a, b in zip(stock_lp, ours_lp, strict=True) if math.isfinite(a))
    assert worst < 1e-3, f"prompt log-probs differ by up to {worst}"


def test_prompt_logprobs_do_see_positions(stock_llm):
    """Guard for the test above: the same tokens with the video at another frame rate
    (so other temporal positions) must change the prompt log-probs."""
    prompt = chat_prompt("<video>", "What is shown?")
    frames, _ = noise_video(0)
    fast = _generate(stock_llm, prompt, {"video": noise_video(0)})
    slow = _generate(stock_llm, prompt, {"video": (frames, noise_video(0, fps=0.1)[1])})
    assert fast.prompt_token_ids == slow.prompt_token_ids
    diffs = [abs(a - b) for a, b in zip(_prompt_logprobs(fast), _prompt_logprobs(slow), strict=True)]
    assert max(diffs) > 1e-3
