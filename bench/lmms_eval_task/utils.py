"""lmms-eval hooks of the proxy video-QA task (sharp_proxy_videoqa.yaml): each document is one
clip, {"video": absolute mp4 path, "question", "answer", "task", "split", "seed"}."""


def doc_to_visual(doc):
    # A path: lmms-eval's openai model with pass_video_url=True sends it as file://.
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"exact_match": float(results[0].strip() == doc["answer"])}
