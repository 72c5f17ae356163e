"""What a decoder needs of a codec's bitstream, and the quantizer the bitstream really codes.

**The rate rule.** A codec image's rate is the bytes a decoder needs to reconstruct it, × 8:

* AVC / HEVC / VVC (Annex-B byte streams): the parameter sets and the coded slices, each with
  its start code (the framing the decoder reads). Left out: SEI (x264 writes a 637-byte
  user-data SEI with its version and options into every stream), access-unit delimiters,
  end-of-sequence / end-of-stream and filler data — none of them changes a decoded pixel.
* AV1 (a low-overhead OBU stream, the AV1 spec's Section 5): the sequence header, frame header,
  tile group and frame OBUs. Left out: temporal delimiters (a container's job: they carry no
  data), metadata, padding, redundant frame headers and tile lists.

:func:`decoder_stream` applies the rule; ``tests/test_generate_faithful.py`` shows it is right by
decoding the kept stream to the same pixels as the whole one.

**The coded quantizer.** :func:`coded_qp` reads the quantizer back from the first picture's
headers — AVC ``26 + pic_init_qp_minus26 + slice_qp_delta`` (SPS, PPS, slice header), HEVC
``26 + init_qp_minus26 + slice_qp_delta``, AV1 the frame header's ``base_q_idx`` (0–255) — so a
test can check that the QP asked for is the QP coded. Only what an intra (key) picture needs is
parsed; a stream using another feature raises :class:`BitstreamError` rather than guessing.
"""

from __future__ import annotations

from collections.abc import Iterator

AVC_KEPT = frozenset({1, 2, 3, 4, 5, 7, 8})
"""AVC nal_unit_type kept: coded slices (1–5: non-IDR, data partitions A–C, IDR), SPS, PPS."""
HEVC_KEPT = frozenset(range(0, 35))
"""HEVC nal_unit_type kept: the VCL (coded slice segment) types 0–31, VPS 32, SPS 33, PPS 34."""
VVC_KEPT = frozenset(range(0, 20))
"""VVC nal_unit_type kept: VCL 0–11, OPI, DCI, VPS, SPS, PPS, APS (prefix/suffix), picture
header (12–19); left out: AUD 20, EOS 21, EOB 22, SEI 23/24, filler 25."""
AV1_KEPT = frozenset({1, 3, 4, 6})
"""AV1 obu_type kept: sequence header 1, frame header 3, tile group 4, frame 6."""
AV1_QINDEX = (*range(0, 248, 4), 249, 255)
"""The AV1 encoders' 0–63 "QP" scale → the coded base_q_idx (libaom's and SVT-AV1's
quantizer_to_qindex table): 4 × QP, except 62 → 249 and 63 → 255."""


class BitstreamError(ValueError):
    """A bitstream this module cannot read (truncated, or a feature it does not parse)."""


def decoder_stream(bitstream: bytes, codec: str) -> bytes:
    """The part of ``bitstream`` a decoder needs (see the module's rule), in the same format."""
    if codec == "av1":
        return b"".join(raw for kind, _, raw in obus(bitstream) if kind in AV1_KEPT)
    kept = {"avc": AVC_KEPT, "hevc": HEVC_KEPT, "vvc": VVC_KEPT}[codec]
    return b"".join(raw for kind, _, raw in nal_units(bitstream, codec) if kind in kept)


def coded_qp(bitstream: bytes, codec: str) -> int:
    """The quantizer of the stream's first picture: the slice QP (AVC, HEVC) or base_q_idx (AV1)."""
    if codec == "avc":
        return _avc_slice_qp(bitstream)
    if codec == "hevc":
        return _hevc_slice_qp(bitstream)
    if codec == "av1":
        return _av1_base_q_idx(bitstream)
    raise BitstreamError(f"reading the QP of {codec} is not supported")


def nal_units(bitstream: bytes, codec: str) -> Iterator[tuple[int, bytes, bytes]]:
    """(nal_unit_type, payload without start code, raw bytes with start code) of each NAL unit
    of an Annex-B byte stream."""
    starts = []
    at = bitstream.find(b"\x00\x00\x01")
    while at >= 0:
        starts.append(at)
        at = bitstream.find(b"\x00\x00\x01", at + 3)
    if not starts:
        raise BitstreamError(f"{codec}: no Annex-B start code")
    for index, start in enumerate(starts):
        begin = start - 1 if start > 0 and bitstream[start - 1] == 0 else start  # 4-byte code
        if index == 0:
            begin = 0  # leading zero bytes belong to the first start code
        end = starts[index + 1] if index + 1 < len(starts) else len(bitstream)
        if index + 1 < len(starts) and bitstream[end - 1] == 0:
            end -= 1  # the next unit's 4-byte start code
        payload = bitstream[start + 3 : end]
        if not payload:
            raise BitstreamError(f"{codec}: empty NAL unit")
        yield _nal_type(payload, codec), payload, bitstream[begin:end]


def obus(bitstream: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """(obu_type, payload, raw bytes with header) of each OBU of a low-overhead AV1 stream."""
    at = 0
    while at < len(bitstream):
        header = bitstream[at]
        kind, extension, has_size = (header >> 3) & 0x0F, header >> 2 & 1, header >> 1 & 1
        if not has_size:
            raise BitstreamError("av1: an OBU without obu_size (not a low-overhead stream)")
        cursor = at + 1 + extension
        size, cursor = _leb128(bitstream, cursor)
        if cursor + size > len(bitstream):
            raise BitstreamError("av1: truncated OBU")
        yield kind, bitstream[cursor : cursor + size], bitstream[at : cursor + size]
        at = cursor + size


class BitReader:
    """MSB-first reader of a NAL unit's RBSP or an OBU's payload, with exp-Golomb codes."""

    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, 0

    def u(self, count: int) -> int:
        """``count`` bits as an unsigned integer (the specs' u(n) / f(n))."""
        value = 0
        for _ in range(count):
            byte = self.position >> 3
            if byte >= len(self.data):
                raise BitstreamError("read past the end of a header")
            value = value << 1 | (self.data[byte] >> (7 - (self.position & 7)) & 1)
            self.position += 1
        return value

    def ue(self) -> int:
        """Unsigned exp-Golomb ue(v): n leading zeros, a one, then n bits."""
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise BitstreamError("exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        """Signed exp-Golomb se(v): 1, 2, 3, 4 … map to 1, −1, 2, −2 …"""
        code = self.ue()
        return (code + 1) // 2 if code % 2 else -(code // 2)

    def ns(self, count: int) -> int:
        """AV1's non-symmetric unsigned ns(n): a value below ``count`` in ⌊log2⌋ or one more bit."""
        width = count.bit_length()
        extra = (1 << width) - count
        value = self.u(width - 1)
        return value if value < extra else (value << 1) - extra + self.u(1)


def rbsp(payload: bytes) -> bytes:
    """A NAL unit's payload without its emulation-prevention bytes (00 00 03 → 00 00)."""
    out, zeros = bytearray(), 0
    for byte in payload:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _nal_type(payload: bytes, codec: str) -> int:
    if codec == "avc":
        return payload[0] & 0x1F
    if len(payload) < 2:
        raise BitstreamError(f"{codec}: NAL unit shorter than its header")
    return (payload[0] >> 1) & 0x3F if codec == "hevc" else payload[1] >> 3


def _first(bitstream: bytes, codec: str, kind: int, header_bytes: int) -> BitReader:
    for found, payload, _ in nal_units(bitstream, codec):
        if found == kind:
            return BitReader(rbsp(payload[header_bytes:]))
    raise BitstreamError(f"{codec}: no NAL unit of type {kind}")


def _avc_slice_qp(bitstream: bytes) -> int:
    sps, pps = _first(bitstream, "avc", 7, 1), _first(bitstream, "avc", 8, 1)
    profile = sps.u(8)
    sps.u(16)  # constraint flags, level_idc
    sps.ue()  # seq_parameter_set_id
    separate_planes = 0
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        if sps.ue() == 3:  # chroma_format_idc
            separate_planes = sps.u(1)
        sps.ue(), sps.ue(), sps.u(1)  # bit depths, qpprime_y_zero_transform_bypass_flag
        if sps.u(1):
            raise BitstreamError("avc: SPS scaling matrices are not parsed")
    frame_num_bits = sps.ue() + 4
    poc_type = sps.ue()
    poc_lsb_bits = sps.ue() + 4 if poc_type == 0 else 0
    if poc_type == 1:
        raise BitstreamError("avc: pic_order_cnt_type 1 is not parsed")
    sps.ue(), sps.u(1), sps.ue(), sps.ue()  # max_num_ref_frames, gaps, width, height in MBs
    frame_mbs_only = sps.u(1)

    pps.ue(), pps.ue(), pps.u(1)  # pps id, sps id, entropy_coding_mode_flag
    bottom_field_poc = pps.u(1)
    if pps.ue():
        raise BitstreamError("avc: slice groups are not parsed")
    pps.ue(), pps.ue(), pps.u(3)  # num_ref_idx defaults, weighted prediction flags
    pic_init_qp = 26 + pps.se()
    pps.se(), pps.se(), pps.u(2)  # pic_init_qs, chroma_qp_index_offset, deblocking, intra
    redundant_pic_cnt = pps.u(1)

    for kind, payload, _ in nal_units(bitstream, "avc"):
        if kind in (1, 5):
            slice_ = BitReader(rbsp(payload[1:]))
            break
    else:
        raise BitstreamError("avc: no coded slice")
    slice_.ue()  # first_mb_in_slice
    if slice_.ue() % 5 != 2:
        raise BitstreamError("avc: the first slice is not an I slice")
    slice_.ue()  # pic_parameter_set_id
    if separate_planes:
        slice_.u(2)
    slice_.u(frame_num_bits)
    if not frame_mbs_only and slice_.u(1):  # field_pic_flag
        raise BitstreamError("avc: field pictures are not parsed")
    if kind == 5:
        slice_.ue()  # idr_pic_id
    if poc_type == 0:
        slice_.u(poc_lsb_bits)
        if bottom_field_poc:
            slice_.se()
    if redundant_pic_cnt:
        slice_.ue()
    if payload[0] >> 5 & 3:  # nal_ref_idc: dec_ref_pic_marking()
        if kind == 5:
            slice_.u(2)  # no_output_of_prior_pics_flag, long_term_reference_flag
        elif slice_.u(1):
            raise BitstreamError("avc: adaptive reference marking is not parsed")
    return pic_init_qp + slice_.se()


def _hevc_slice_qp(bitstream: bytes) -> int:
    sps, pps = _first(bitstream, "hevc", 33, 2), _first(bitstream, "hevc", 34, 2)
    sps.u(4)  # sps_video_parameter_set_id
    sub_layers = sps.u(3)  # sps_max_sub_layers_minus1
    sps.u(1)
    sps.u(96)  # general profile (88 bits) and level (8)
    present = [(sps.u(1), sps.u(1)) for _ in range(sub_layers)]
    if sub_layers:
        sps.u(2 * (8 - sub_layers))  # reserved_zero_2bits
    for profile, level in present:
        sps.u(88 * profile + 8 * level)
    sps.ue()  # sps_seq_parameter_set_id
    chroma = sps.ue()
    separate_planes = sps.u(1) if chroma == 3 else 0
    sps.ue(), sps.ue()  # picture size
    if sps.u(1):  # conformance_window_flag
        sps.ue(), sps.ue(), sps.ue(), sps.ue()
    sps.ue(), sps.ue(), sps.ue()  # bit depths, log2_max_pic_order_cnt_lsb_minus4
    ordering_all = sps.u(1)
    for _ in range(sub_layers + 1 if ordering_all else 1):
        sps.ue(), sps.ue(), sps.ue()
    for _ in range(6):  # coding / transform block sizes and depths
        sps.ue()
    if sps.u(1) and sps.u(1):  # scaling_list_enabled_flag, sps_scaling_list_data_present_flag
        raise BitstreamError("hevc: SPS scaling lists are not parsed")
    sps.u(1)  # amp_enabled_flag
    sao = sps.u(1)

    pps.ue(), pps.ue(), pps.u(1)  # pps id, sps id, dependent_slice_segments_enabled_flag
    output_flag, extra_bits = pps.u(1), pps.u(3)
    pps.u(2), pps.ue(), pps.ue()  # sign hiding, cabac_init_present, num_ref_idx defaults
    init_qp = 26 + pps.se()

    for kind, payload, _ in nal_units(bitstream, "hevc"):
        if kind < 32:
            slice_ = BitReader(rbsp(payload[2:]))
            break
    else:
        raise BitstreamError("hevc: no coded slice")
    if kind not in (19, 20):
        raise BitstreamError("hevc: the first picture is not an IDR picture")
    if not slice_.u(1):  # first_slice_segment_in_pic_flag
        raise BitstreamError("hevc: the first slice segment does not start the picture")
    slice_.u(1)  # no_output_of_prior_pics_flag (an IRAP picture)
    slice_.ue()  # slice_pic_parameter_set_id
    slice_.u(extra_bits)
    if slice_.ue() != 2:
        raise BitstreamError("hevc: the first slice is not an I slice")
    if output_flag:
        slice_.u(1)
    if separate_planes:
        slice_.u(2)
    if sao:
        slice_.u(1)
        if chroma and not separate_planes:
            slice_.u(1)
    return init_qp + slice_.se()


def _av1_base_q_idx(bitstream: bytes) -> int:
    found = {kind: payload for kind, payload, _ in reversed(list(obus(bitstream)))}
    if 1 not in found or not ({3, 6} & set(found)):
        raise BitstreamError("av1: no sequence header or frame header")
    sequence = _av1_sequence(BitReader(found[1]))
    header = BitReader(found[6] if 6 in found else found[3])
    return _av1_frame_q_idx(header, sequence)


def _av1_sequence(reader: BitReader) -> dict[str, int]:
    """The sequence-header fields a key frame's header depends on."""
    reader.u(3)  # seq_profile
    reader.u(1)  # still_picture
    reduced = reader.u(1)
    if reduced:
        reader.u(5)
    else:
        if reader.u(1):  # timing_info_present_flag
            raise BitstreamError("av1: timing info is not parsed")
        initial_delay = reader.u(1)
        for _ in range(reader.u(5) + 1):
            reader.u(12)
            if reader.u(5) > 7:
                reader.u(1)
            if initial_delay and reader.u(1):
                reader.u(4)
    width_bits, height_bits = reader.u(4) + 1, reader.u(4) + 1
    width, height = reader.u(width_bits) + 1, reader.u(height_bits) + 1
    frame_ids = 0 if reduced else reader.u(1)
    id_bits = 0
    if frame_ids:
        id_bits = reader.u(4) + 2 + reader.u(3) + 1
    big_superblocks = reader.u(1)
    reader.u(2)  # enable_filter_intra, enable_intra_edge
    screen_tools, integer_mv, order_bits = 2, 2, 0
    if not reduced:
        reader.u(4)  # interintra, masked compound, warped motion, dual filter
        order_hint = reader.u(1)
        if order_hint:
            reader.u(2)
        if not reader.u(1):  # seq_choose_screen_content_tools
            screen_tools = reader.u(1)
        if screen_tools > 0 and not reader.u(1):  # seq_choose_integer_mv
            integer_mv = reader.u(1)
        if order_hint:
            order_bits = reader.u(3) + 1
    superres = reader.u(1)
    return {
        "reduced": reduced, "width": width, "height": height, "frame_ids": frame_ids,
        "id_bits": id_bits, "big_superblocks": big_superblocks, "screen_tools": screen_tools,
        "integer_mv": integer_mv, "order_bits": order_bits, "superres": superres,
        "width_bits": width_bits, "height_bits": height_bits,
    }  # fmt: skip


def _av1_frame_q_idx(reader: BitReader, sequence: dict[str, int]) -> int:
    """base_q_idx of a shown key frame's uncompressed header (the only frame a still image has)."""
    if not sequence["reduced"]:
        if reader.u(1):
            raise BitstreamError("av1: the first frame header shows an existing frame")
        if reader.u(2) != 0 or not reader.u(1):
            raise BitstreamError("av1: the first frame is not a shown key frame")
    disable_cdf_update = reader.u(1)
    screen_tools = sequence["screen_tools"]
    if screen_tools == 2:
        screen_tools = reader.u(1)
    if screen_tools and sequence["integer_mv"] == 2:
        reader.u(1)  # force_integer_mv
    reader.u(sequence["id_bits"])  # current_frame_id
    size_override = 0 if sequence["reduced"] else reader.u(1)
    reader.u(sequence["order_bits"])  # order_hint (primary_ref_frame: none for a key frame)
    width, height = sequence["width"], sequence["height"]
    if size_override:
        width = reader.u(sequence["width_bits"]) + 1
        height = reader.u(sequence["height_bits"]) + 1
    upscaled = width
    if sequence["superres"] and reader.u(1):
        denominator = reader.u(3) + 9
        width = (upscaled * 8 + denominator // 2) // denominator
    if reader.u(1):  # render_and_frame_size_different
        reader.u(32)
    if screen_tools and upscaled == width:
        reader.u(1)  # allow_intrabc
    if not (sequence["reduced"] or disable_cdf_update):
        reader.u(1)  # disable_frame_end_update_cdf
    _av1_tile_info(reader, width, height, sequence["big_superblocks"])
    return reader.u(8)


def _av1_tile_info(reader: BitReader, width: int, height: int, big: int) -> None:
    """Reads past tile_info() (AV1 spec 5.9.15), whose length depends on the frame size."""
    mi_cols, mi_rows = 2 * ((width + 7) >> 3), 2 * ((height + 7) >> 3)
    shift = 5 if big else 4
    sb_cols, sb_rows = (mi_cols + (1 << shift) - 1) >> shift, (mi_rows + (1 << shift) - 1) >> shift
    sb_size = shift + 2
    max_width_sb, max_area_sb = 4096 >> sb_size, (4096 * 2304) >> (2 * sb_size)
    min_cols_log2 = _tile_log2(max_width_sb, sb_cols)
    max_cols_log2 = _tile_log2(1, min(sb_cols, 64))
    max_rows_log2 = _tile_log2(1, min(sb_rows, 64))
    min_tiles_log2 = max(min_cols_log2, _tile_log2(max_area_sb, sb_rows * sb_cols))
    if reader.u(1):  # uniform_tile_spacing_flag
        cols_log2 = min_cols_log2
        while cols_log2 < max_cols_log2 and reader.u(1):
            cols_log2 += 1
        rows_log2 = max(min_tiles_log2 - cols_log2, 0)
        while rows_log2 < max_rows_log2 and reader.u(1):
            rows_log2 += 1
    else:
        widest, start, cols = 0, 0, 0
        while start < sb_cols:
            size = reader.ns(min(sb_cols - start, max_width_sb)) + 1
            widest, start, cols = max(widest, size), start + size, cols + 1
        area = (sb_rows * sb_cols) >> (min_tiles_log2 + 1) if min_tiles_log2 else sb_rows * sb_cols
        max_height_sb, start, rows = max(area // widest, 1), 0, 0
        while start < sb_rows:
            start, rows = start + reader.ns(min(sb_rows - start, max_height_sb)) + 1, rows + 1
        cols_log2, rows_log2 = _tile_log2(1, cols), _tile_log2(1, rows)
    if cols_log2 or rows_log2:
        reader.u(cols_log2 + rows_log2 + 2)  # context_update_tile_id, tile_size_bytes_minus_1


def _tile_log2(block: int, target: int) -> int:
    k = 0
    while block << k < target:
        k += 1
    return k


def _leb128(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    for index in range(8):
        if at >= len(data):
            raise BitstreamError("av1: truncated obu_size")
        byte = data[at]
        value |= (byte & 0x7F) << (7 * index)
        at += 1
        if not byte & 0x80:
            return value, at
    raise BitstreamError("av1: obu_size longer than 8 bytes")
