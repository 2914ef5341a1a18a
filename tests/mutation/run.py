"""Mutation testing of the modules that carry the system's guarantees (`make mutation`).

Each target is one source file, optionally narrowed to the functions that carry the guarantee,
with the fast tests that guard it. A target runs in its own scratch copy of the repository
(``.mutation/<target>/``), where mutmut writes its ``mutants/`` tree, so mutated source never
appears in the checkout. The score per target is killed (or timed out) over all mutants less
those listed in ``EQUIVALENT`` with the reason no test can tell them apart.

    python -m tests.mutation.run                 # every target
    python -m tests.mutation.run losses offsets  # some of them
    python -m tests.mutation.run --report        # scores of the last runs, nothing rerun
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = ROOT / ".mutation"
PACKAGES = ("shared_model", "upstream_service", "ranker_service", "loadtests")


@dataclass(frozen=True)
class Target:
    source: str  # the file mutated
    tests: tuple[str, ...]  # the pytest selection run against each mutant (files or node ids)
    functions: tuple[str, ...] = ()  # mutant-name globs; empty = every function of the file
    note: str = ""
    extra_pytest_args: tuple[str, ...] = field(default=())


TARGETS: dict[str, Target] = {
    "contract": Target(
        "shared_model/contract.py",
        (
            "tests/shared_model/test_contract.py",
            "tests/shared_model/test_contract_golden.py",
            "tests/shared_model/test_contract_properties.py",
            "tests/shared_model/test_contract_edges.py",
        ),
        functions=(
            "x_stable_hash__*",
            "xǁHistoryRecordǁencode__*",
            "xǁHistoryRecordǁdecode__*",
            "x_merge_histories__*",
            "x_parse_embedding_header__*",
            "xǁEmbeddingRecordǁ*",
            "x__tag__*",
            "x_*_key__*",
            "x_user_of_key__*",
        ),
        note="codecs, header parser, keys, history merge",
    ),
    "offsets": Target(
        "upstream_service/offsets.py",
        ("tests/upstream_service/test_units.py", "tests/upstream_service/test_offsets.py"),
    ),
    "worker_refresh": Target(
        "upstream_service/worker.py",
        ("tests/upstream_service/test_refresh_unit.py",),
        functions=("xǁWorkerǁ_refresh__*", "xǁWorkerǁ_commit__*", "xǁWorkerǁ_retry__*"),
        note="the refresh path and offset commits (_refresh, _commit, _retry)",
    ),
    "embedding_store": Target(
        "upstream_service/embedding_store.py",
        (
            "tests/upstream_service/test_units.py",
            "tests/upstream_service/test_versioned_read.py",
            "tests/upstream_service/test_refresh_unit.py",
            "tests/upstream_service/test_embedding_store.py",
        ),
        note="the write-if-newer script's caller",
    ),
    "records": Target(
        "ranker_service/records.py",
        (
            "tests/ranker_service/test_features_records.py",
            "tests/ranker_service/test_features.py",
            "tests/ranker_service/test_records_columns.py",
        ),
    ),
    "features": Target(
        "ranker_service/features.py",
        (
            "tests/ranker_service/test_features.py",
            "tests/ranker_service/test_features_records.py",
            "tests/ranker_service/test_feature_builders.py",
        ),
        functions=(
            "x_decide_embedding__*",
            "xǁEmbeddingDecisionǁ*",
            "x_history_events__*",
            "x_user_events__*",
            "x_inline_history__*",
            "x_resolve_content__*",
            "x_build_candidates__*",
            "x_request_context__*",
            "x_ranking_scores__*",
            "x_ranking_order__*",
            "x_ranking_reference__*",
        ),
        note="the embedding decision and feature building (not the input checks)",
    ),
    "losses": Target(
        "shared_model/losses.py",
        ("tests/shared_model/test_losses.py", "tests/shared_model/test_losses_edges.py"),
    ),
    "mla": Target(
        "shared_model/modules/mla.py",
        (
            "tests/shared_model/test_mla.py",
            "tests/shared_model/test_mla_absorbed.py",
            "tests/shared_model/test_mla_fused.py",
        ),
        functions=(
            "xǁMultiHeadLatentAttentionǁ_fold__*",
            "xǁMultiHeadLatentAttentionǁfolded_weights__*",
            "xǁMultiHeadLatentAttentionǁ_absorbed__*",
            "xǁMultiHeadLatentAttentionǁ_up_kv__*",
            "x__scores__*",
            "x__fusable__*",
            "x__merge_fused_first__*",
        ),
        note="the absorbed path, its fused first segment and its weight folding",
    ),
    "thread_cpu": Target(
        "ranker_service/thread_cpu.py",
        ("tests/ranker_service/test_thread_cpu.py",),
        note="the CPU of the ranker's threads by role",
    ),
    "redis_mux": Target(
        "ranker_service/redis_mux.py",
        ("tests/ranker_service/test_redis_mux.py",),
        note="the ranker's multiplexed Redis reader: replies to the read that asked for them",
    ),
    "quantize": Target(
        "shared_model/quantize.py",
        ("tests/shared_model/test_quantize.py",),
        note="which Linear layers int8 serving quantizes, and what it refuses",
    ),
    "queueing": Target(
        "loadtests/bench/queueing.py",
        ("tests/loadtests/test_queueing.py",),
        functions=("x_simulate__*", "x_quantile__*"),
        note="the queue the ranker benchmark's ideal P99s come from",
    ),
    "batching": Target(
        "ranker_service/batching.py",
        ("tests/ranker_service/test_batching.py",),
        note="the micro-batcher: which jobs a drain takes, isolation of a failing job",
    ),
    "content_cache": Target(
        "ranker_service/content_cache.py",
        ("tests/ranker_service/test_content_cache.py",),
        note="the content-vector cache: capacity, TTL, width, metrics",
    ),
    "score_many": Target(
        "shared_model/ranker.py",
        ("tests/shared_model/test_score_many.py",),
        functions=(
            "x_batch_requests__*",
            "x__trim_padding__*",
            "x__pad_candidates__*",
            "xǁBatchǁ*",
            "xǁRankerModelǁscore_many__*",
            "xǁRankerModelǁscore_batched__*",
        ),
        note="several requests in one pass: batching, padding, trimming, splitting back",
    ),
    "request_decoder": Target(
        "ranker_service/request_decoder.py",
        ("tests/ranker_service/test_request_decoder.py",),
        note="the msgspec body decoder: what it accepts equals the pydantic schema",
    ),
    "fast_rank": Target(
        "ranker_service/fast_rank.py",
        ("tests/ranker_service/test_fast_path.py",),
        note="POST /v1/rank ahead of the router: the route's answers, status and headers",
    ),
    "store": Target(
        "ranker_service/store.py",
        (
            "tests/ranker_service/test_store.py",
            "tests/upstream_service/test_versioned_read.py",
            "tests/cluster/test_stores.py",
            "tests/reliability/test_security.py::"
            "test_redis_tls_and_password_settings_reach_the_multiplexed_reader",
        ),
        functions=("xǁFeatureStoreǁ*",),
        note="the ranker's Redis read: its keys, its budget, and which reply becomes what",
    ),
    "middleware": Target(
        "ranker_service/middleware.py",
        ("tests/ranker_service/test_middleware.py", "tests/ranker_service/test_bad_input.py"),
        note="the body-size limit (declared and streamed) and the request metrics by outcome",
    ),
    "ranking_checks": Target(
        "ranker_service/ranking.py",
        ("tests/ranker_service/test_rank_checks.py", "tests/ranker_service/test_bad_input.py"),
        functions=("xǁRankingServiceǁ_check__*",),
        note="the request's limits: candidates and events, ids and widths the model refuses",
    ),
    "traced": Target(
        "shared_model/traced.py",
        ("tests/shared_model/test_traced.py",),
        note="the recorded scoring graphs: one per shape case, replayed for any G, N and T",
    ),
}

# Mutants no test can kill because they do not change behaviour, each with the reason.
# Keys are mutmut's mutant names; a listed name that no longer exists is reported.
EQUIVALENT: dict[str, str] = {
    "loadtests.bench.queueing.x_simulate__mutmut_26": (
        "the service draws seeded seed - 1 instead of seed + 1: any fixed offset other than 0 "
        "gives a stream independent of the arrivals'; which one is arbitrary"
    ),
    "loadtests.bench.queueing.x_simulate__mutmut_27": (
        "the service draws seeded seed + 2 instead of seed + 1: as above"
    ),
    "loadtests.bench.queueing.x_simulate__mutmut_32": (
        "the clock starts at 1.0 instead of 0.0 with every server free at 0.0: every arrival "
        "moves by the same second and still finds the servers as free as before"
    ),
    "loadtests.bench.queueing.x_simulate__mutmut_39": (
        "one measured time drawn at random from itself instead of taken: the same value"
    ),
    "shared_model.quantize.x_quantize_int8__mutmut_25": (
        "simplefilter('ignore') with no category silences every warning inside the block, "
        "a superset of DeprecationWarning: nothing else warns there"
    ),
    "shared_model.quantize.x_quantize_int8__mutmut_32": (
        "every UserWarning ignored instead of the quantization ones: the only UserWarning "
        "raised inside the block is that one"
    ),
    "shared_model.quantize.x_quantize_int8__mutmut_33": (
        "the message filter without its category: the only warning with that message is a "
        "UserWarning"
    ),
    "shared_model.quantize.x_quantize_int8__mutmut_37": (
        "the message pattern upper-cased: the warnings module matches messages ignoring case"
    ),
    "shared_model.quantize.x_quantize_int8__mutmut_41": "inplace=None is falsy, as False",
    "shared_model.quantize.x_quantize_int8__mutmut_44": (
        "quantize_dynamic's inplace defaults to False"
    ),
    "ranker_service.content_cache.xǁContentCacheǁput_many__mutmut_19": (
        "popitem(last=None): OrderedDict.popitem reads last as a truth value, and None pops "
        "the oldest entry as False does"
    ),
    "ranker_service.content_cache.xǁContentCacheǁput_many__mutmut_8": (
        "flags.writeable = None: numpy takes the truth value, so the vector is read-only as "
        "with False"
    ),
    "ranker_service.batching.x__score_one__mutmut_10": (
        "shared=True left out: it is score()'s default"
    ),
    "ranker_service.batching.xǁMicroBatcherǁ_score_group__mutmut_10": (
        "a lone job scored through the batched call: for one request score_many is score's "
        "step (batch_requests trims it as score_shared does), bit for bit "
        "(test_idle_thread_scores_a_request_at_once_alone), with the same retry when it fails"
    ),
    "ranker_service.batching.xǁMicroBatcherǁ_score_group__mutmut_22": (
        "a failed batch's probs set to '' instead of None: nothing reads it before each job "
        "is retried alone"
    ),
    "ranker_service.batching.xǁMicroBatcherǁ_score_group__mutmut_35": (
        "zip over the batch's results without strict=True: the batched scorers return one "
        "result per job (Batch.split), so the lengths always agree"
    ),
    "ranker_service.batching.xǁMicroBatcherǁ_score_group__mutmut_39": (
        "zip without strict: as above"
    ),
    "ranker_service.batching.xǁMicroBatcherǁ_score_group__mutmut_40": ("strict=False: as above"),
    "ranker_service.batching.xǁMicroBatcherǁ_score_group__mutmut_58": (
        "zip of the group and its queue times without strict=True: one list is built from the "
        "other, so the lengths always agree"
    ),
    "ranker_service.batching.xǁMicroBatcherǁ_score_group__mutmut_61": (
        "zip without strict: as above"
    ),
    "ranker_service.batching.xǁMicroBatcherǁ_score_group__mutmut_62": ("strict=False: as above"),
    "ranker_service.batching.xǁMicroBatcherǁ_take__mutmut_17": (
        "a drain with max_wait_s = 0 set to wait: its deadline is its oldest job's submission "
        "time, already past, so it breaks out before waiting (it holds the lock: nothing can "
        "arrive in between)"
    ),
    "ranker_service.batching.xǁMicroBatcherǁ_take__mutmut_27": (
        "remaining exactly 0 goes on to wait(0) instead of breaking: a zero-timeout wait "
        "returns False at once (a notify reaches only threads already waiting), and it breaks"
    ),
    "ranker_service.fast_rank.x__read_body__mutmut_19": (
        "a message without more_body read as None instead of False: both falsy, the last chunk"
    ),
    "ranker_service.fast_rank.x__read_body__mutmut_21": (
        "get('more_body') without a default: None, as above"
    ),
    "ranker_service.fast_rank.x__route_path__mutmut_5": (
        "a scope without root_path read as None instead of '': both falsy, nothing stripped"
    ),
    "ranker_service.fast_rank.x__route_path__mutmut_7": (
        "get('root_path') without a default: None, as above"
    ),
    "ranker_service.fast_rank.x__route_path__mutmut_10": (
        "a missing root_path read as 'XXXX': no ASGI path starts with it (paths start with "
        "'/'), so nothing is stripped, as with ''"
    ),
    "ranker_service.fast_rank.xǁFastRankǁ__call____mutmut_51": (
        "the handler's Request built with receive=None: the body was already read whole, so "
        "a handler can read the scope (method, path, headers) either way, and the ranker's "
        "handlers read nothing else"
    ),
    "ranker_service.fast_rank.xǁFastRankǁ__call____mutmut_53": (
        "Request(scope) without receive: starlette's default empty receive, as above"
    ),
    "ranker_service.fast_rank.xǁFastRankǁ__call____mutmut_55": (
        "the handler's response called with receive=None: the handlers return JSONResponse, "
        "whose __call__ only sends"
    ),
    "shared_model.traced.x_for_inference__mutmut_6": (
        "the warning's stacklevel 1 instead of 2: both name a line of shared_model/traced.py "
        "(for_inference is only called from the scorer's own _record)"
    ),
    "shared_model.traced.x_for_inference__mutmut_7": (
        "stacklevel 3 instead of 2: as above, one frame further up, still in traced.py"
    ),
    "shared_model.traced.xǁTracedScorerǁ_record__mutmut_35": (
        "the warning's stacklevel left out (1) instead of 2: both name a line of "
        "shared_model/traced.py (_record is only called from the scorer's own _graph)"
    ),
    "shared_model.traced.xǁTracedScorerǁ_record__mutmut_36": (
        "stacklevel 3 instead of 2: as above, one frame further up, still in traced.py"
    ),
    "shared_model.traced.xǁTracedScorerǁ_record__mutmut_45": (
        "one more run of a new graph at recording than the executor needs: its plan is built "
        "either way and every answer is the same; only the recording's time (one step more) "
        "differs"
    ),
    "shared_model.traced.xǁTracedScorerǁ_record__mutmut_27": (
        "check_trace=None instead of False: torch.jit.trace reads it as a truth value"
    ),
    "shared_model.traced.x_signature__mutmut_5": (
        "the pyramid's last level (k = 0) also gets a 'history shorter than k' flag: 0 > T is "
        "False for every recorded batch, so the cases are split exactly as before"
    ),
    "shared_model.traced.x_signature__mutmut_6": (
        "levels keeping one event lose their flag: 1 > T only for an empty history, which "
        "is scored eagerly and never recorded, so the flag was always False"
    ),
    "shared_model.traced.x_signature__mutmut_7": (
        "G != 1 instead of G == 1: the same two cases under the other value, so every batch "
        "still finds the graph of its own case"
    ),
    "shared_model.traced.x_signature__mutmut_9": ("M != 1 instead of M == 1: as above"),
    "ranker_service.redis_mux.xǁ_Connectionǁ__init____mutmut_4": (
        "transport starts as '' instead of None: connection_made sets it before send() or "
        "fail() can run (_open awaits it)"
    ),
    "ranker_service.redis_mux.xǁMultiplexedRedisǁ_open__mutmut_15": (
        "host None: asyncio connects to localhost, where every test's server listens"
    ),
    "ranker_service.redis_mux.xǁMultiplexedRedisǁ_open__mutmut_18": (
        "server_hostname left out: asyncio verifies TLS against the host by default"
    ),
    "ranker_service.redis_mux.xǁMultiplexedRedisǁ_open__mutmut_23": (
        "server_hostname left out: asyncio verifies TLS against the host by default"
    ),
    "ranker_service.redis_mux.xǁMultiplexedRedisǁ_open__mutmut_24": (
        "server_hostname left out: asyncio verifies TLS against the host by default"
    ),
    "ranker_service.redis_mux.xǁMultiplexedRedisǁ_open__mutmut_35": (
        "the error given to a connection whose setup failed: it is discarded, no read sees it"
    ),
    "ranker_service.redis_mux.xǁMultiplexedRedisǁ_open__mutmut_36": (
        "the error given to a connection whose setup failed: it is discarded, no read sees it"
    ),
    "ranker_service.redis_mux.xǁMultiplexedRedisǁ_open__mutmut_37": (
        "the error given to a connection whose setup failed: it is discarded, no read sees it"
    ),
    "ranker_service.redis_mux.xǁMultiplexedRedisǁ_open__mutmut_38": (
        "the error given to a connection whose setup failed: it is discarded, no read sees it"
    ),
    "ranker_service.redis_mux.xǁMultiplexedRedisǁ_open__mutmut_39": (
        "the error given to a connection whose setup failed: it is discarded, no read sees it"
    ),
    "ranker_service.redis_mux.xǁMultiplexedRedisǁ_connected__mutmut_2": (
        "'or' for 'and': a failed connect then re-raises inside its done callback, which the "
        "loop only logs; the reads awaiting it see the same exception"
    ),
    "ranker_service.redis_mux.xǁ_Connectionǁconnection_made__mutmut_15": (
        "TCP_NODELAY set to 2: a boolean socket option, on for any non-zero value"
    ),
    "ranker_service.redis_mux.xǁ_Connectionǁconnection_made__mutmut_22": (
        "SO_KEEPALIVE set to 2: a boolean socket option, on for any non-zero value"
    ),
    "ranker_service.redis_mux.xǁMultiplexedRedisǁping__mutmut_3": (
        "PING sent as 'ping': Redis command names are case-insensitive"
    ),
    "upstream_service.offsets.xǁOffsetTrackerǁ__init____mutmut_3": "chunk ids start at 1: opaque",
    "upstream_service.offsets.xǁOffsetTrackerǁopen__mutmut_3": "ids count down: still unique",
    "upstream_service.offsets.xǁOffsetTrackerǁopen__mutmut_4": "ids step by 2: still unique",
    "upstream_service.offsets.xǁOffsetTrackerǁ_advance__mutmut_8": (
        "`return` for `break` skips notify_all only while the head chunk is incomplete, when a "
        "waiter would go back to sleep anyway"
    ),
    "upstream_service.offsets.xǁOffsetTrackerǁrestore__mutmut_6": (
        "default -2 for -1: Kafka offsets are >= 0, so both compare below every offset"
    ),
    "upstream_service.offsets.xǁOffsetTrackerǁrestore__mutmut_7": (
        "`<=` for `<`: an equal offset is rewritten with the same value"
    ),
    "upstream_service.offsets.xǁOffsetTrackerǁwait_idle__mutmut_5": (
        "`left < 0` for `<= 0`: at exactly 0 the wait returns at once and the next check gives up"
    ),
    **{
        f"upstream_service.embedding_store.xǁEmbeddingStoreǁ{fn}__mutmut_{n}": (
            "pipeline(transaction=True/None) for False: on one redis-server MULTI/EXEC returns the "
            "same answers; on Redis Cluster the client builds its own pipeline (tests/cluster)"
        )
        for fn, n in (
            ("read", 2),
            ("read", 3),
            ("write", 3),
            ("write", 4),
            ("computed_at", 3),
            ("computed_at", 4),
        )
    },
    "upstream_service.worker.xǁWorkerǁ_commit__mutmut_18": (
        "OffsetAndMetadata without leader_epoch: its default is the same -1"
    ),
    **{
        f"upstream_service.worker.xǁWorkerǁ_refresh__mutmut_{n}": (
            "zip(strict=...) dropped or False: the history store returns one history per user, "
            "the encoder one embedding per history and the store one answer per write"
        )
        for n in (21, 24, 25, 65, 69, 70)
    },
    **{
        f"shared_model.modules.mla.xǁMultiHeadLatentAttentionǁ{name}": reason
        for name, reason in (
            ("_absorbed__mutmut_60", "cat(dim=+1) for dim=-1: the scores are 2-D"),
            ("_absorbed__mutmut_62", "softmax(dim=+1) for dim=-1: the scores are 2-D"),
            ("_fold__mutmut_21", "upper-case einsum subscripts name the same axes"),
            ("_fold__mutmut_39", "upper-case einsum subscripts name the same axes"),
        )
    },
    **{
        f"shared_model.modules.mla.x__merge_fused_first__mutmut_{n}": reason
        for n, reason in (
            (51, "cat of one tensor copies it: the same scores"),
            (58, "cat of one tensor copies it: the same scores"),
            (56, "cat(dim=+1) for dim=-1: the scores are 2-D"),
            (70, "amax(dim=+1) for dim=-1: the scores are 2-D"),
            (83, "sum(dim=+1) for dim=-1: the weights are 2-D"),
        )
    },
    "shared_model.modules.mla.x__scores__mutmut_68": 'float("-INF") is float("-inf")',
    **{
        f"shared_model.contract.{name}": reason
        for name, reason in (
            ("x_parse_embedding_header__mutmut_26", "decode() defaults to UTF-8"),
            ("x_parse_embedding_header__mutmut_27", "decode() defaults to errors='strict'"),
            ("x_parse_embedding_header__mutmut_31", "'UTF-8' names the same codec"),
            ("x_stable_hash__mutmut_8", "'UTF-8' names the same codec"),
            ("x_user_of_key__mutmut_6", "'UTF-8' names the same codec"),
            ("xǁEmbeddingRecordǁencode__mutmut_4", "'UTF-8' names the same codec"),
            (
                "x_user_of_key__mutmut_17",
                "`end <= start` for `end < start`: both are -1 only without '{', which the "
                "prefix check already refuses",
            ),
        )
    },
    **{
        f"ranker_service.records.{name}": reason
        for name, reason in (
            ("x__decode_group__mutmut_8", "(length + 40) % 2 has the parity of (length - 40)"),
            ("x__decode_group__mutmut_12", "the validity mask of an all-corrupt group is unused"),
            ("x__decode_group__mutmut_14", "the validity mask of an all-corrupt group is unused"),
            ("x__decode_group__mutmut_21", "frombuffer without count: the buffer holds `count`"),
            ("x_decode_embedding__mutmut_13", "frombuffer without count: length checked exactly"),
            ("x_decode_history_columns__mutmut_6", "fromiter infers int64 from the lengths"),
            ("x_decode_history_columns__mutmut_10", "fromiter's count only preallocates"),
            (
                "x_decode_history_columns__mutmut_15",
                "no fast path for equal lengths: the general path returns the same columns",
            ),
            (
                "x_decode_history_columns__mutmut_18",
                "no fast path for equal lengths: the general path returns the same columns",
            ),
            ("x_decode_history_columns__mutmut_61", "argsort of distinct positions: any kind"),
            ("x_decode_history_columns__mutmut_63", "argsort of distinct positions: any kind"),
            ("x_decode_history_columns__mutmut_66", "argsort of distinct positions: any kind"),
            *(
                (
                    f"x__newest_last__mutmut_{n}",
                    "argsort of any kind: distinct timestamps sort one way, a tie takes lexsort",
                )
                for n in (3, 5, 7)
            ),
            (
                "x_recent_event_batch__mutmut_45",
                "no all-valid shortcut: indexing by every position returns the same rows",
            ),
        )
    },
    **{
        f"ranker_service.features.x_request_context__mutmut_{n}": (
            "dtype np.int64 dropped or None: numpy 2's default integer is int64, and the "
            "contract's hashes are signed 64-bit"
        )
        for n in (3, 5)
    },
    **{
        f"ranker_service.features.x_build_candidates__mutmut_{n}": (
            "dtype np.int64 dropped or None: numpy 2's default integer is int64, and the "
            "contract's hashes are signed 64-bit"
        )
        for n in (57, 59)
    },
    "ranker_service.features.x_decide_embedding__mutmut_68": (
        "reshape(1, -2): numpy reads any negative size as 'the rest', as -1"
    ),
    "ranker_service.features.x_ranking_scores__mutmut_2": (
        "astype(None): numpy's default dtype is float64, the one asked for"
    ),
    "ranker_service.features.x_ranking_order__mutmut_7": (
        'kind="STABLE": numpy reads the sort kind case-insensitively'
    ),
    **{
        f"ranker_service.features.x_ranking_reference__mutmut_{n}": (
            "zip(strict=...) dropped or False: one bid per candidate, the same list"
        )
        for n in (4, 7, 8)
    },
    "shared_model.losses.x_auc__mutmut_7": (
        "`n_pos == 0 and n_neg == 0`: with one class the rank statistic is 0/0, nan anyway"
    ),
    "ranker_service.thread_cpu.xǁThreadCpuǁ__init____mutmut_2": (
        'loop_thread "" instead of None: no thread ident equals either'
    ),
    **{
        f"ranker_service.thread_cpu.xǁThreadCpuǁcollect__mutmut_{n}": "the metric's help text"
        for n in (10, 11, 12, 13, 14)
    },
    "shared_model.losses.x_multitask_bce__mutmut_16": "device=None: the same tensor on CPU",
    "shared_model.losses.x_multitask_bce__mutmut_19": "device dropped: the same tensor on CPU",
    "shared_model.losses.x_normalized_entropy__mutmut_10": (
        "`numel() == 1` instead of 0: an empty batch is nan through the mean anyway, and one "
        "label is a single class (nan by the p check)"
    ),
    "ranker_service.store.xǁFeatureStoreǁfetch__mutmut_21": (
        "HGET sent in lower case: Redis reads command names case-insensitively (redis-py's "
        "cluster client routes them upper-cased)"
    ),
    "ranker_service.store.xǁFeatureStoreǁfetch__mutmut_24": (
        "HGET sent in lower case: Redis reads command names case-insensitively (redis-py's "
        "cluster client routes them upper-cased)"
    ),
    "ranker_service.store.xǁFeatureStoreǁfetch__mutmut_28": (
        "ZRANGE sent in lower case: Redis reads command names case-insensitively (redis-py's "
        "cluster client routes them upper-cased)"
    ),
    "ranker_service.store.xǁFeatureStoreǁfetch__mutmut_41": (
        "GET sent in lower case: Redis reads command names case-insensitively (redis-py's "
        "cluster client routes them upper-cased)"
    ),
    "ranker_service.store.xǁFeatureStoreǁfetch__mutmut_44": (
        "MGET sent in lower case: Redis reads command names case-insensitively (redis-py's "
        "cluster client routes them upper-cased)"
    ),
    "ranker_service.store.xǁFeatureStoreǁfetch__mutmut_94": (
        "zip's strict None instead of True: Redis answers MGET with one value per key (the "
        "cluster path, one GET per key), so the lengths always match"
    ),
    "ranker_service.store.xǁFeatureStoreǁfetch__mutmut_97": (
        "zip's strict left out instead of True: Redis answers MGET with one value per key "
        "(the cluster path, one GET per key), so the lengths always match"
    ),
    "ranker_service.store.xǁFeatureStoreǁfetch__mutmut_98": (
        "zip's strict False instead of True: Redis answers MGET with one value per key (the "
        "cluster path, one GET per key), so the lengths always match"
    ),
    "ranker_service.store.xǁFeatureStoreǁ_send__mutmut_5": (
        "pipeline(transaction=None) instead of False: both falsy, no MULTI/EXEC either way"
    ),
    "ranker_service.store.xǁFeatureStoreǁping__mutmut_6": (
        "the readiness probe gives a hung Redis 1.25 s instead of 0.25 s before saying no: "
        "the same answer later; only time tells them apart, and tests do not time"
    ),
    "ranker_service.store.xǁFeatureStoreǁ__init____mutmut_18": (
        "the multiplexed reader's connect attempt unbounded instead of bounded by the budget: "
        "every read still gives up at the budget (its own timeout), so a hung connect only "
        "lasts longer; only time tells them apart, and tests do not time"
    ),
    "ranker_service.store.xǁFeatureStoreǁ__init____mutmut_29": (
        "the multiplexed reader's connect attempt bounded by at least 1.001 s instead of "
        "0.001 s: the same reads give up at the same budget; only time tells them apart"
    ),
    "ranker_service.middleware.xǁBodySizeLimitǁ__call____mutmut_83": (
        "a streamed message without more_body read as None instead of False: both falsy, "
        "the last message either way"
    ),
    "ranker_service.middleware.xǁBodySizeLimitǁ__call____mutmut_85": (
        "a streamed message without more_body read with no default (None) instead of False: "
        "both falsy, the last message either way"
    ),
    "ranker_service.middleware.xǁRankMetricsǁ__call____mutmut_17": (
        "the status of an app that raised before answering taken as 501 instead of 500: the "
        "status is only read for its outcome, server_error either way"
    ),
    "ranker_service.ranking.xǁRankingServiceǁ_check__mutmut_10": (
        "the content ids kept as dict keys with '' instead of None as their value: the dict "
        "is an ordered set, only its keys are read"
    ),
}


def _module_name(source: str) -> str:
    return source.removesuffix(".py").replace("/", ".")


def _prepare(name: str, target: Target) -> Path:
    work = SCRATCH / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", "mutants")
    for package in (*PACKAGES, "tests"):
        shutil.copytree(ROOT / package, work / package, ignore=ignore)
    # pyproject keeps pytest's settings; mutmut's settings go in setup.cfg (read when
    # pyproject has no [tool.mutmut]).
    pyproject = (ROOT / "pyproject.toml").read_text()
    pyproject = re.sub(r"(?ms)^\[tool\.mutmut\].*?(?=^\[|\Z)", "", pyproject)
    (work / "pyproject.toml").write_text(pyproject)
    _prepare_config(work, target)
    return work


def _prepare_config(work: Path, target: Target) -> None:
    tests = [t for t in target.tests if (ROOT / t.split("::")[0]).exists()]
    selection = "\n    ".join(
        [*tests, "-x", "-q", "-p", "no:cacheprovider", *target.extra_pytest_args]
    )
    (work / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths =\n"
        + "".join(f"    {p}\n" for p in PACKAGES)
        + f"only_mutate =\n    {target.source}\n"
        f"pytest_add_cli_args_test_selection =\n    {selection}\n"
        "process_isolation = forkserver\n"
        "timeout_multiplier = 5.0\n"
        "timeout_constant = 20.0\n"
        "use_git_change_detection = false\n"
    )


def _mutmut(work: Path, *args: str, check: bool = True) -> str:
    mutmut = Path(sys.executable).with_name("mutmut")
    cmd = ["nice", "-n", "10", str(mutmut), *args]
    # One thread per mutant process: tiny models, and a shared machine.
    # Hypothesis tests run a tenth of their examples (tests.mutation.examples).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LLATTE_MUTATION": "1"}
    done = subprocess.run(cmd, cwd=work, text=True, capture_output=True, env=env)
    if check and done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"mutmut {' '.join(args)} failed in {work} (exit {done.returncode})")
    return done.stdout


def results(work: Path) -> dict[str, str]:
    """Mutant name -> status of the last run in ``work``."""
    out = _mutmut(work, "results", "--all", "true")
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s+(\S+): (.+)$", line)
        if m:
            found[m.group(1)] = m.group(2).strip()
    return found


def _selected(target: Target, statuses: dict[str, str]) -> dict[str, str]:
    if not target.functions:
        return statuses
    module = _module_name(target.source)
    pats = [
        re.compile(re.escape(module) + r"\." + re.escape(f).replace(r"\*", ".*"))
        for f in target.functions
    ]
    return {k: v for k, v in statuses.items() if any(p.fullmatch(k) for p in pats)}


def run(name: str, target: Target) -> None:
    work = _prepare(name, target)
    module = _module_name(target.source)
    patterns = [f"{module}.{f}" for f in target.functions]
    print(f"[{name}] mutating {target.source} in {work}", flush=True)
    _mutmut(work, "run", "--max-children", "1", *patterns, check=False)
    _save(work, _selected(target, results(work)))


def rerun_survivors(name: str, target: Target) -> None:
    """Retest only the last run's survivors against the current tests (tests only added since:
    a killed mutant stays killed)."""
    work = SCRATCH / name
    previous = _load(work)
    survivors = score(name, target)[3]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for tests in (work / "tests", work / "mutants" / "tests"):
        shutil.copytree(ROOT / "tests", tests, ignore=ignore, dirs_exist_ok=True)
    _prepare_config(work, target)
    shutil.copy2(work / "setup.cfg", work / "mutants" / "setup.cfg")
    print(f"[{name}] retesting {len(survivors)} survivors", flush=True)
    if survivors:
        _mutmut(work, "run", "--max-children", "1", *survivors, check=False)
    # mutmut forgets the other results when the tests changed: keep them from the last run.
    now = results(work)
    previous.update({k: now[k] for k in survivors if now.get(k, "not checked") != "not checked"})
    _save(work, previous)


def _save(work: Path, statuses: dict[str, str]) -> None:
    (work / "results.json").write_text(json.dumps(statuses, indent=0, sort_keys=True))


def _load(work: Path) -> dict[str, str]:
    return json.loads((work / "results.json").read_text())


def score(name: str, target: Target) -> tuple[int, int, int, list[str]]:
    """(killed, non-equivalent total, equivalent, survivor names) of the last run."""
    statuses = _load(SCRATCH / name)
    killed = sum(s in ("killed", "timeout") for s in statuses.values())
    equivalent = [k for k in statuses if k in EQUIVALENT]
    survivors = [
        k for k, s in statuses.items() if s not in ("killed", "timeout") and k not in EQUIVALENT
    ]
    return killed, len(statuses) - len(equivalent), len(equivalent), sorted(survivors)


def report(names: list[str]) -> None:
    print(f"{'target':<16} {'killed':>7} {'of':>5} {'equiv':>6} {'score':>7}  scope")
    for name in names:
        target = TARGETS[name]
        if not (SCRATCH / name / "results.json").exists():
            print(f"{name:<16} (not run)")
            continue
        killed, total, equivalent, survivors = score(name, target)
        pct = 100.0 * killed / total if total else float("nan")
        scope = target.note or "whole file"
        print(f"{name:<16} {killed:>7} {total:>5} {equivalent:>6} {pct:>6.1f}%  {scope}")
        for survivor in survivors:
            print(f"    survived: {survivor}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"some of: {' '.join(TARGETS)}")
    parser.add_argument("--report", action="store_true", help="only print the last scores")
    parser.add_argument(
        "--survivors", action="store_true", help="retest only the last run's survivors"
    )
    args = parser.parse_args(argv)
    names = args.targets or list(TARGETS)  # cheapest first
    unknown = set(names) - TARGETS.keys()
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {' '.join(TARGETS)}")
    if not args.report:
        for name in names:
            (rerun_survivors if args.survivors else run)(name, TARGETS[name])
    report(names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
