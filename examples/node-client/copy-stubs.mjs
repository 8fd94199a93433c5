// Copies the committed stubs (clients/typescript/src/gen, made by `make stubs`)
// into src/gen, so that tsc compiles them with the client and Node resolves
// their imports (@bufbuild/protobuf) from this example's node_modules.
import { cpSync, rmSync } from "node:fs";

const source = new URL("../../clients/typescript/src/gen/", import.meta.url);
const target = new URL("./src/gen/", import.meta.url);
rmSync(target, { recursive: true, force: true });
cpSync(source, target, { recursive: true });
