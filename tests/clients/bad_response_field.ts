// Must not compile: an agent list's items have no `title`, and data may be undefined.
import createClient from "openapi-fetch";
import type { paths } from "./teamhub";

const api = createClient<paths>({ baseUrl: "/" });
const { data } = await api.GET("/api/agents", {
  params: { query: { organizationId: "00000000-0000-0000-0000-000000000000" } },
});
console.log(data?.[0].title); // ERROR
