"""Stand-in `aws` for the script tests, driven by a JSON scenario file.

FAKE_AWS_SCENARIO names a JSON object whose keys are "service operation" or
"service operation resource-name" and whose values are one response or a list
of responses consumed in order (the last one repeats). A response is a JSON
document (filtered through --query and printed like the real CLI with
--output text or json), or {"__error__": "message"} to fail like the CLI does.
Every call is appended to FAKE_AWS_LOG, the stack parameter files it is given to
FAKE_AWS_LOG.params. A call the scenario does not name
fails, so a test sees every call it did not expect.
"""

import json
import os
import sys

import jmespath

NAME_OPTIONS = (
    "--stack-name",
    "--secret-id",
    "--name",
    "--repository-name",
    "--repository-names",
    "--services",
    "--log-group-name-prefix",
    "--log-group-name",
    "--dashboard-name",
)


def option(args, name):
    if name in args:
        index = args.index(name)
        if index + 1 < len(args):
            return args[index + 1]
    return None


def text(value):
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list):
        if value and all(isinstance(v, list) for v in value):
            return "\n".join("\t".join(text(x) for x in row) for row in value)
        return "\t".join(text(v) for v in value)
    if isinstance(value, dict):
        return "\t".join(text(v) for v in value.values())
    return str(value)


def main():
    args = sys.argv[1:]
    with open(os.environ["FAKE_AWS_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(args) + "\n")
    if "--secret-string" in args:
        # Prove that the value arrived as a file, never on the command line.
        value = option(args, "--secret-string")
        if value.startswith("file://"):
            secrets_log = os.environ["FAKE_AWS_LOG"] + ".secrets"
            with (
                open(secrets_log, "a", encoding="utf-8") as out,
                open(value[len("file://") :], encoding="utf-8") as payload,
            ):
                out.write(payload.read() + "\n")
    parameters = option(args, "--parameters")
    if parameters and parameters.startswith("file://"):
        # The script deletes its parameter files; keep what each stack was given.
        with (
            open(os.environ["FAKE_AWS_LOG"] + ".params", "a", encoding="utf-8") as out,
            open(parameters[len("file://") :], encoding="utf-8") as given,
        ):
            entry = {"stack": option(args, "--stack-name"), "parameters": json.load(given)}
            out.write(json.dumps(entry) + "\n")
    positional = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg.startswith("--"):
            skip = arg not in ("--force",)
            continue
        positional.append(arg)
    service, operation = positional[0], positional[1]
    name = next((option(args, o) for o in NAME_OPTIONS if option(args, o)), None)

    state_file = os.environ["FAKE_AWS_LOG"] + ".state"
    state = {}
    if os.path.exists(state_file):
        with open(state_file, encoding="utf-8") as f:
            state = json.load(f)
    with open(os.environ["FAKE_AWS_SCENARIO"], encoding="utf-8") as f:
        scenario = json.load(f)

    key = None
    for candidate in (f"{service} {operation} {name}", f"{service} {operation}"):
        if candidate in scenario:
            key = candidate
            break
    if key is None:
        print(f"stand-in aws: unexpected call: {' '.join(args)}", file=sys.stderr)
        return 255
    responses = scenario[key]
    if not isinstance(responses, list):
        responses = [responses]
    index = state.get(key, 0)
    response = responses[min(index, len(responses) - 1)]
    state[key] = index + 1
    with open(state_file, "w", encoding="utf-8") as f:
        json.dump(state, f)

    if isinstance(response, dict) and "__error__" in response:
        print(f"\nAn error occurred: {response['__error__']}", file=sys.stderr)
        return 254
    if isinstance(response, str):
        print(response)
        return 0
    query = option(args, "--query")
    result = jmespath.search(query, response) if query else response
    if option(args, "--output") == "text" or option(args, "--output") == "table":
        if result is not None or query:
            print(text(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
