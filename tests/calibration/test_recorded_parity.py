"""The self-check holds int8 graphs to the errors calibration recorded, not to fp16's a-priori bounds."""

from dataclasses import replace

from stablemtl_edge.artifact.compare import RECORDED_FLOOR, default_comparator, recorded_tolerances, round_up
from stablemtl_edge.artifact.manifest import Component, Precision
from stablemtl_edge.runtime.selfcheck import check_parity


def test_calibration_records_what_the_self_check_holds_the_int8_set_to(calibrated_unet):
    d, m = calibrated_unet.directory, calibrated_unet.manifest
    recorded = m.recorded_parity(Precision.INT8)
    assert "unet/photo/latent" in recorded and "e2e/multi/depth/image" in recorded
    (comparator,) = check_parity(d, m, [Precision.INT8]).values()
    assert comparator.results and not comparator.failures()
    for r in comparator.results:  # each key at twice its recorded error, never below the floor
        assert r.tolerance.atol == round_up(max(RECORDED_FLOOR, 2 * recorded[r.key]["max_abs"]))


def test_an_int8_graph_that_no_longer_computes_what_it_did_fails(calibrated_unet):
    d, m = calibrated_unet.directory, calibrated_unet.manifest
    unet = m.components[Precision.INT8][Component.UNET]
    assert unet.precision is Precision.INT8 and unet.parity
    shrunk = {k: {**v, "max_abs": v["max_abs"] * 1e-3} for k, v in unet.parity.items()}  # as if 1000x better
    tampered = replace(m, components={**m.components, Precision.INT8: {
        **m.components[Precision.INT8], Component.UNET: replace(unet, parity=shrunk)}})
    (comparator,) = check_parity(d, tampered, [Precision.INT8]).values()
    failed = {r.key for r in comparator.failures()}
    assert any(k.startswith("unet/photo/") for k in failed)


def test_recorded_tolerances_round_up_and_keep_a_floor():
    tol = recorded_tolerances({"a/photo/x": {"max_abs": 0.01234}, "b/photo/y": {"max_abs": 0.0}})
    assert tol["a/photo/x"].atol == 0.025 and tol["b/photo/y"].atol == RECORDED_FLOOR
    plain = default_comparator(Precision.INT8)  # no record (an older artifact): the loose default only
    assert plain.tolerances == {} and plain.default.atol == 0.1
