.PHONY: demo test bench

demo:  ## the CD4ML story: baseline, experiment branch, compare, gate, report, promote
	bash notebooks/demo.sh

test:  ## what CI runs (after installing): the whole suite
	python -m pytest -ra

bench:  ## benchmarks; tables go to docs/performance.md
	python bench/bench_run.py --rounds 7 --write
	python bench/bench_server.py --rounds 5 --write
