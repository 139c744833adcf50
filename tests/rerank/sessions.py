"""An onnxruntime session's options read back, to compare the batch scorer's with the
service's attribute by attribute (until both come from one factory in shared/)."""

from __future__ import annotations

from typing import Any

# Every attribute onnxruntime.SessionOptions exposes that can change what a session
# computes or how, and the config entries it lets one read back by key.
SESSION_ATTRIBUTES = (
    "graph_optimization_level", "intra_op_num_threads", "inter_op_num_threads",
    "execution_mode", "execution_order", "enable_cpu_mem_arena", "enable_mem_pattern",
    "enable_mem_reuse", "use_deterministic_compute", "use_per_session_threads",
    "log_severity_level", "log_verbosity_level", "enable_profiling", "optimized_model_filepath",
)  # fmt: skip
SESSION_CONFIG_KEYS = (
    "session.intra_op.allow_spinning", "session.inter_op.allow_spinning",
    "session.set_denormal_as_zero", "session.disable_prepacking", "session.use_env_allocators",
    "session.load_model_format", "session.use_ort_model_bytes_directly",
    "session.qdqisint8allowed", "session.x64quantprecision", "session.disable_quant_qdq",
    "session.enable_quant_qdq_cleanup", "session.disable_double_qdq_remover",
    "session.qdq_matmulnbits_accuracy_level", "session.dynamic_block_base",
    "session.intra_op_thread_affinities", "session.force_spinning_stop",
    "session.strict_shape_type_inference", "session.allow_released_opsets_only",
    "session.disable_aot_function_inlining", "session.disable_cpu_ep_fallback",
    "session.graph_optimizations_loop_level", "optimization.disable_specified_optimizers",
    "mlas.enable_gemm_fastmath_arm64_bfloat16",
)  # fmt: skip


def session_settings(session: Any) -> dict[str, str]:
    """What an onnxruntime.InferenceSession was opened with, attribute by attribute."""
    options = session.get_session_options()
    out = {name: str(getattr(options, name, "<absent>")) for name in SESSION_ATTRIBUTES}
    for key in SESSION_CONFIG_KEYS:
        try:
            out[key] = options.get_session_config_entry(key)
        except RuntimeError:  # not set
            out[key] = "<unset>"
    out["providers"] = ",".join(session.get_providers())
    return out
