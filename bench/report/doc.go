// Command report writes bench/RESULTS.md from the results of make bench
// (bench/run-all.sh): one JSON file per scenario in bench/results/, the
// micro-benchmarks' text and the machine's description. For each scenario
// it prints the command, when and at which commit it was measured, tables
// of ZenConn's figures beside the reference's (the baseline server, the
// floor server, nginx, ZenConn without its audit log), the ratios, each
// target and whether it is met, and the hand-written analysis of
// bench/notes/<scenario>.md. A figure missing from a JSON is printed as
// "—"; a scenario without results says so.
//
//	go run ./bench/report [render] [--results bench/results] [--notes bench/notes] [--out bench/RESULTS.md]
//	go run ./bench/report wrap --name NAME --command CMD --started TIME --exit N --stdout FILE [--log FILE] [--previous FILE]
//	go run ./bench/report machine [--scenarios LIST]
//
// wrap and machine are used by bench/run-all.sh: wrap turns a script's
// stdout into the results file (the script's JSON under "result", with
// the command, the times, the exit status and, when the run failed, the
// end of its log and the last successful result); machine describes the
// computer when a run starts (bench/results/machine.json). wrap exits with
// status 3 when the run failed (a non-zero --exit, or no JSON object on its
// stdout), after printing its envelope all the same.
//
// Who owns what: main.go the subcommands and the render entry point;
// envelope.go the results files (the envelope wrap writes, its reading,
// its failure record); render.go the page (header, targets, sections,
// machine); scenarios.go one renderer per scenario and the generic one;
// data.go and format.go reading figures out of decoded JSON and printing
// them; machine.go the machine's description; micro.go the
// micro-benchmarks' text.
//
// Standard library only, apart from bench/internal/kvflag.
package main
