"""Writes the malformed-input corpus (tests/malformed/*): one file (or directory) per case,
named for what is wrong with it. Run from this directory with a Python that has polars:
    python generate.py
The files are committed; rerun only to change the corpus. Expectations live in *.expected."""
import os
import shutil

import polars as pl

HERE = os.path.dirname(os.path.abspath(__file__))


def write(name, data):
    path = os.path.join(HERE, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


for d in ["csv_header_mismatch_between_files", "csv_empty_file", "csv_file_of_blank_lines", "jsonl_empty_file"]:
    shutil.rmtree(os.path.join(HERE, d), ignore_errors=True)

ROWS = "id,name,qty\n1,apple,10\n2,pear,20\n3,fig,30\n"

# CSV
write("csv_bom.csv", b"\xef\xbb\xbf" + ROWS.encode())
write("csv_crlf.csv", ROWS.replace("\n", "\r\n"))
write("csv_quoted_newlines.csv", 'id,name,qty\n1,"two\nlines",10\n2,"three\nmore\nlines",20\n3,fig,30\n')
write("csv_bad_value_after_quoted_newline.csv", 'id,name,qty\n1,"two\nlines",10\n2,pear,2x0\n3,fig,30\n')
write("csv_ragged_short_row.csv", "id,name,qty\n1,apple,10\n2,pear\n3,fig,30\n")
write("csv_ragged_long_row.csv", "id,name,qty\n1,apple,10\n2,pear,20,extra\n3,fig,30\n")
write("csv_mixed_types_declared.csv", "id,name,qty\n1,apple,10\n2,pear,twenty\n3,fig,30\n4,kiwi,4.5\n")
write("csv_mixed_types_inferred.csv", "id,name,qty\n1,apple,10\n2,pear,20\n3,fig,30\n4,kiwi,many\n")
write("csv_nul_byte_in_number.csv", b"id,name,qty\n1,apple,10\n2,pear,2\x000\n3,fig,30\n")
write("csv_nul_byte_in_text.csv", b"id,name,qty\n1,ap\x00ple,10\n2,pear,20\n")
write("csv_invalid_utf8.csv", b"id,name,qty\n1,apple,10\n2,p\xffar,20\n3,fig,30\n")
write("csv_5mb_line.csv", "id,name,qty\n1,apple,10\n2," + "x" * (5 << 20) + ",20\n3,fig,30\n")
write("csv_empty_file/a.csv", ROWS)
write("csv_empty_file/b.csv", b"")
write("csv_header_only.csv", "id,name,qty\n")
write("csv_unterminated_quote.csv", 'id,name,qty\n1,apple,10\n2,"pear,20\n3,fig,30\n')
write("csv_blank_lines.csv", "id,name,qty\n1,apple,10\n\n\n2,pear,20\n\n3,fig,30\n")
write("csv_trailing_delimiter.csv", "id,name,qty\n1,apple,10,\n2,pear,20\n")
write("csv_no_trailing_newline.csv", ROWS.rstrip("\n"))
write("csv_bad_date.csv", "id,day,qty\n1,2026-11-02,10\n2,2026-13-45,20\n3,2026-11-04,30\n")
write("csv_int_overflow.csv", "id,name,qty\n1,apple,10\n2,pear,99999999999999999999\n")
write("csv_quote_inside_field.csv", 'id,name,qty\n1,ap"ple,10\n2,pear,20\n')
write("csv_binary_garbage.csv", b"id,name,qty\n1,apple,10\n" + bytes((i * 37 + 11) % 256 for i in range(600)) + b"\n")
write("csv_file_of_blank_lines/a.csv", ROWS)
write("csv_file_of_blank_lines/b.csv", "\n\n\n")
write("csv_header_mismatch_between_files/a.csv", ROWS)
write("csv_header_mismatch_between_files/b.csv", "id,title,qty\n4,kiwi,40\n")

# JSON lines
write("jsonl_invalid_json.jsonl", '{"id": 1, "qty": 10}\n{"id": 2, "qty": 20,}\n{"id": 3, "qty": 30}\n')
write("jsonl_not_an_object.jsonl", '{"id": 1, "qty": 10}\n[2, 20]\n{"id": 3, "qty": 30}\n')
write("jsonl_mistyped_value.jsonl", '{"id": 1, "qty": 10}\n{"id": 2, "qty": "twenty"}\n{"id": 3, "qty": 30}\n')
write("jsonl_invalid_utf8.jsonl", b'{"id": 1, "name": "apple"}\n{"id": 2, "name": "p\xffar"}\n{"id": 3, "name": "fig"}\n')
write("jsonl_truncated_last_line.jsonl", '{"id": 1, "qty": 10}\n{"id": 2, "qty": 20}\n{"id": 3, "q')
write("jsonl_crlf.jsonl", '{"id": 1, "qty": 10}\r\n{"id": 2, "qty": 20}\r\n')
write("jsonl_long_line.jsonl", '{"id": 1, "qty": 10}\n{"id": 2, "pad": "' + "y" * 200_000 + '"}\n{"id": 3, "qty": 30}\n')
write("jsonl_nul_byte.jsonl", b'{"id": 1, "qty": 10}\n{"id": 2, "qty": 2\x000}\n{"id": 3, "qty": 30}\n')
write("jsonl_empty_file/a.jsonl", '{"id": 1, "qty": 10}\n')
write("jsonl_empty_file/b.jsonl", b"")

# Parquet
buf = os.path.join(HERE, "_valid.parquet")
pl.DataFrame({"id": list(range(100)), "name": [f"n{i}" for i in range(100)]}).write_parquet(buf, row_group_size=50)
data = open(buf, "rb").read()
os.remove(buf)
for case, bad in [("parquet_truncated", data[: len(data) // 2]), ("parquet_not_parquet", "id,name\n1,a\n"), ("parquet_empty_file", b""),
                  ("parquet_footer_only", data[-8:]), ("parquet_zeroed_middle", data[:200] + bytes(len(data) - 400) + data[-200:]),
                  ("parquet_corrupt_pages", data[:4] + b"\xff" * 300 + data[304:])]:
    shutil.rmtree(os.path.join(HERE, case), ignore_errors=True)
    write(f"{case}/a.parquet", data)
    write(f"{case}/b.parquet", bad)
shutil.rmtree(os.path.join(HERE, "parquet_schema_mismatch_between_files"), ignore_errors=True)
write("parquet_schema_mismatch_between_files/a.parquet", data)
other = os.path.join(HERE, "parquet_schema_mismatch_between_files/b.parquet")
pl.DataFrame({"id": [1, 2], "title": ["a", "b"]}).write_parquet(other)
