#!/usr/bin/env python3
"""pyspark side of bench/compare-wordcount.sh: counts the words of FILE in Spark `local[N]`
with the `wordcount` plugin's definition of a word (maximal runs of letters and digits,
lowercased), the way a Spark user would write it (textFile, flatMap, reduceByKey).
Runs RUNS times in one session (the first warms the JVM) and prints, per run:
RESULT seconds=S words=N distinct=D

  wc-spark.py FILE CORES RUNS
"""
import re
import sys
import time

from pyspark.sql import SparkSession

path, cores, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
spark = (
    SparkSession.builder.master(f"local[{cores}]")
    .appName("wordcount")
    .config("spark.ui.enabled", "false")
    .config("spark.driver.memory", "4g")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
word = re.compile(r"[^\W_]+")
for _ in range(runs):
    started = time.monotonic()
    counts = (
        spark.sparkContext.textFile(path)
        .flatMap(lambda line: word.findall(line.lower()))
        .map(lambda w: (w, 1))
        .reduceByKey(lambda a, b: a + b)
    )
    result = counts.collect()
    distinct, words = len(result), sum(n for _, n in result)
    print(f"RESULT seconds={time.monotonic() - started:.3f} words={words} distinct={distinct}", flush=True)
spark.stop()
