#!/usr/bin/env python3
"""pyspark side of bench/compare-wordcount.sh: counts the words of FILE in Spark `local[N]`
with the `wordcount` plugin's definition of a word (maximal runs of letters and digits,
lowercased), written the two ways a Spark user would:
  rdd  textFile + flatMap (a Python regex) + reduceByKey + collect (Python workers);
  df   read.text + lower + split on a Java regex + explode + groupBy().count() + collect (the
       DataFrame API: the whole plan runs in the JVM, no Python per record).
Runs RUNS times per API in one session (the first of each warms up) and prints, per run:
RESULT api=A seconds=S words=N distinct=D

  wc-spark.py FILE CORES RUNS
"""
import re
import sys
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

path, cores, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
spark = (
    SparkSession.builder.master(f"local[{cores}]")
    .appName("wordcount")
    .config("spark.ui.enabled", "false")
    .config("spark.ui.showConsoleProgress", "false")
    .config("spark.driver.memory", "4g")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
word = re.compile(r"[^\W_]+")


def rdd():
    counts = (
        spark.sparkContext.textFile(path)
        .flatMap(lambda line: word.findall(line.lower()))
        .map(lambda w: (w, 1))
        .reduceByKey(lambda a, b: a + b)
    )
    return [(w, n) for w, n in counts.collect()]


def df():
    words = spark.read.text(path).select(
        F.explode(F.split(F.lower(F.col("value")), r"[^\p{L}\p{N}]+")).alias("w")
    )
    counts = words.where(F.col("w") != "").groupBy("w").count()
    return [(r["w"], r["count"]) for r in counts.collect()]


for api, run in (("rdd", rdd), ("df", df)):
    for _ in range(runs):
        started = time.monotonic()
        result = run()
        seconds = time.monotonic() - started
        words = sum(n for _, n in result)
        print(f"RESULT api={api} seconds={seconds:.3f} words={words} distinct={len(result)}", flush=True)
spark.stop()
